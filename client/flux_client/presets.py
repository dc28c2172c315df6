"""Style presets: ``flux_contract.presets``, re-exported for SDK users."""

from flux_contract import presets as _contract
from flux_contract.presets import *  # noqa: F403

__all__ = _contract.__all__

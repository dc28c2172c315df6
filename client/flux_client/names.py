"""Names users type and their ASCII forms: ``flux_contract.names``, re-exported."""

from flux_contract import names as _contract
from flux_contract.names import *  # noqa: F403

__all__ = _contract.__all__

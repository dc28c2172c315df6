"""The experiment format: ``flux_contract.experiments``, re-exported for SDK users."""

from flux_contract import experiments as _contract
from flux_contract.experiments import *  # noqa: F403

__all__ = _contract.__all__

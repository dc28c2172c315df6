"""The fluxserve wire contract, under the name SDK users know: ``flux_contract.wire``
(the stubs ``pb`` / ``pb_grpc``, the reason → HTTP → gRPC table ``REASONS``, the header
and metadata names, the rich-status helpers), re-exported."""

from flux_contract import wire as _contract
from flux_contract.wire import *  # noqa: F403

__all__ = _contract.__all__

"""What one call of the fluxserve API is made of (``Operation``), and the REST request it
becomes (``HttpRequest``). The calls themselves are in ``_operations``; the transports
run any ``Operation`` and need only this module, so neither imports the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(frozen=True)
class HttpRequest:
    """One REST request: ``json`` for a JSON body, ``data``/``files`` for a form."""

    method: str
    path: str
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bool = False
    """The answer is bytes (an image), not JSON."""


@dataclass(frozen=True)
class Operation(Generic[Req, Res]):
    """One API call. ``streaming`` calls yield one ``from_proto`` result per message."""

    name: str
    grpc_method: str
    """The ``FluxServiceStub`` attribute."""
    to_proto: Callable[[Req], Any]
    from_proto: Callable[[Any], Res]
    to_http: Callable[[Req], HttpRequest] | None
    """``None``: the call exists over gRPC only (``unsupported_over_http`` says why)."""
    from_json: Callable[[Any], Res] | None
    streaming: bool = False
    unsupported_over_http: str = ""
    metadata: Callable[[Req], tuple[tuple[str, str], ...]] | None = None
    """gRPC metadata the request carries besides its message (REST: ``HttpRequest.headers``)."""

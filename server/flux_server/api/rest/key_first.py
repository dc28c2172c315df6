"""The key before the body: a request that carries a body (``POST``) is refused for its
key before a byte of the body is read.

Without this, a body is read whole and parsed (up to ``--max-body-bytes``, 16 MiB of
JSON becomes hundreds of MiB of Python objects) before the route reaches the key check,
and a caller with no key at all pays the server that memory. Here the refusal is
answered at once and the body is never read: the connection's buffer stops at the
server's flow-control high-water mark, and the connection is closed after the answer
(as gRPC's guard refuses before decoding, see :mod:`flux_server.api.grpc.guard`).

The routes without a body keep checking the key where they did; the answer (401, or 429
when the address is throttled) and the audit are the same as the route's would be.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from flux_server.api.rest.convert import error_response
from flux_server.api.rest.middleware import Middleware
from flux_server.errors import ServeError, status_of
from flux_server.requests.context import CallContext, new_request_id
from flux_server.service.core import GenerationService

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class KeyBeforeBody(Middleware):
    """Checks the API key of a request with a body before the application reads it."""

    def __init__(self, app: ASGIApp, service: GenerationService) -> None:
        super().__init__(app)
        self.service = service

    def applies(self, scope: Scope) -> bool:
        return (
            super().applies(scope)
            and scope.get("method") in BODY_METHODS
            and self.service.admission.keys is not None
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = _context(scope)
        try:
            self.service.authenticate(ctx)
        except ServeError as error:
            self.service.audit_refusal(ctx, error, status_of(error).http)
            await error_response(error, ctx.request_id)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _context(scope: Scope) -> CallContext:
    """What the key check and its audit line need, from the headers alone."""
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }
    given = headers.get("x-request-id", "")
    client = scope.get("client")
    return CallContext(
        endpoint=f"rest:{scope.get('path', '')}",
        request_id=given if 0 < len(given) <= 128 else new_request_id(),
        authorization=headers.get("authorization"),
        client=client[0] if client else None,
    )

"""The REST application's exception handlers: every error, whatever raised it (the core,
a body that does not parse, an unknown path, a bug), answers in the one shape
``{"error": {"code", "message", "field"}}`` with the request id, and a refusal the core
has not recorded gets its audit line."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from flux_server.admission.auth_failures import AuthThrottled
from flux_server.api.rest.convert import error_response, went_away
from flux_server.errors import Cancelled, InternalError, QueueFull, ServeError, status_of
from flux_server.requests.context import CallContext
from flux_server.requests.params import validation_error
from flux_server.service.core import GenerationService

# The application's logger: these lines are the app's.
log = logging.getLogger("flux_server.api.rest.app")

HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def add_error_handlers(app: FastAPI, service: GenerationService) -> None:
    """The handlers on ``app``; refusals are audited through ``service``."""

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        if isinstance(exc, Cancelled):
            log.info(
                "client went away",
                extra={"request_id": rid, "path": request.url.path, "reason": exc.message},
            )
        if not isinstance(exc, QueueFull) or isinstance(exc, AuthThrottled):
            service.audit_refusal(
                CallContext(
                    endpoint=f"rest:{request.url.path}",
                    request_id=rid or "",
                    client=request.client.host if request.client else None,
                ),
                exc,
                status_of(exc).http,
            )
        return error_response(exc, rid)

    @app.exception_handler(ClientDisconnect)
    async def went_away_handler(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Wherever a body is read: a client disconnect, answered (to no one) as 499.
        return await serve_error(request, went_away())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            validation_error(exc.errors()), getattr(request.state, "request_id", None)
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods answer in the same error shape as everything else.
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail), "field": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log (Starlette re-raises after answering);
        # the caller gets the error shape and the request id to quote.
        rid = getattr(request.state, "request_id", None)
        error = InternalError(
            f"the server failed ({type(exc).__name__}); the request id is in its logs"
        )
        return error_response(error, rid)

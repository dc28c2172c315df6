"""The REST application: one FastAPI app per server (no module globals), its routers by
area, the exception handlers that give every error the one shape, and the middleware."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp

from flux_server.admission.auth_failures import AuthThrottled
from flux_server.api.rest.convert import error_response, went_away
from flux_server.api.rest.experiments import experiment_routes
from flux_server.api.rest.generation import generation_routes
from flux_server.api.rest.jobs import job_routes
from flux_server.api.rest.key_first import KeyBeforeBody
from flux_server.api.rest.middleware import BodyLimit, RequestMetrics
from flux_server.api.rest.openapi import hoist_defs, with_vqa_token_limit
from flux_server.api.rest.operations import operation_routes
from flux_server.api.rest.queue import queue_routes
from flux_server.api.rest.uploads import upload_routes
from flux_server.errors import Cancelled, InternalError, QueueFull, ServeError, status_of
from flux_server.requests.context import CallContext
from flux_server.requests.params import validation_error
from flux_server.service.core import GenerationService

log = logging.getLogger(__name__)

HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(service: GenerationService) -> FastAPI:
    """The REST application over ``service``."""
    app = FastAPI(
        title="fluxserve",
        version="v1",
        description="FLUX text-to-image, editing and VQA. Errors: "
        '{"error": {"code", "message", "field"}}.',
    )

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

    app.include_router(generation_routes(service))
    app.include_router(upload_routes(service))
    app.include_router(operation_routes(service))
    app.include_router(queue_routes(service))
    app.include_router(job_routes(service))
    app.include_router(experiment_routes(service))
    generated_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # Every $ref of the request bodies resolves within the document; /vqa's token
        # budget is the loaded model's (read on every call: the model loads after start).
        spec = hoist_defs(generated_openapi())
        return with_vqa_token_limit(spec, service.vqa_token_limit())

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.asgi = RequestMetrics(
        KeyBeforeBody(BodyLimit(app, service.settings.max_body_bytes), service), service.metrics
    )
    return app


def asgi_app(service: GenerationService) -> ASGIApp:
    """The application with the body limit and request metrics around it."""
    asgi: ASGIApp = create_app(service).state.asgi
    return asgi

"""The REST application: one FastAPI app per server (no module globals), its routers by
area, the exception handlers that give every error the one shape
(:mod:`flux_server.api.rest.error_handlers`), and the middleware."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from flux_server.api.rest.error_handlers import add_error_handlers
from flux_server.api.rest.experiments import experiment_routes
from flux_server.api.rest.generation import generation_routes
from flux_server.api.rest.jobs import job_routes
from flux_server.api.rest.key_first import KeyBeforeBody
from flux_server.api.rest.middleware import BodyLimit, RequestMetrics
from flux_server.api.rest.openapi import hoist_defs, with_vqa_token_limit
from flux_server.api.rest.operations import operation_routes
from flux_server.api.rest.queue import queue_routes
from flux_server.api.rest.uploads import upload_routes
from flux_server.service.core import GenerationService


def create_app(service: GenerationService) -> FastAPI:
    """The REST application over ``service``."""
    app = FastAPI(
        title="fluxserve",
        version="v1",
        description="FLUX text-to-image, editing and VQA. Errors: "
        '{"error": {"code", "message", "field"}}.',
    )

    add_error_handlers(app, service)
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

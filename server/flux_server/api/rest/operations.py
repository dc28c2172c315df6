"""What operators and tools read: presets, liveness, readiness and the Prometheus
metrics (also served alone on ``--metrics-port`` by :func:`metrics_app`)."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from flux_server.service.core import GenerationService


def operation_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()
    settings = service.settings

    @router.get("/v1/presets", summary="Style presets")
    @router.get("/presets", summary="Style presets (same as /v1/presets)")
    async def presets() -> dict[str, Any]:
        return {
            "presets": [
                {"name": name, **json.loads(preset.to_json())}
                for name, preset in sorted(service.list_presets().items())
            ]
        }

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        summary="Readiness: model loaded and warmed up, the audit log writable",
        responses={503: {"description": "Loading, draining, or the audit log cannot be written."}},
    )
    async def readyz() -> JSONResponse:
        # Warnings leave the answer as it is: they say what will stop serving soon.
        found = readiness_warnings(service)
        warnings = {"warnings": found} if found else {}
        info = service.model_info()
        if info is not None:
            return JSONResponse(
                {
                    **warnings,
                    "status": "ready",
                    "model": info.model,
                    "revision": info.revision,
                    "release": settings.release,
                    "device": info.device,
                    "dtype": info.dtype,
                    "load_seconds": round(info.load_seconds, 3),
                    "warmup_seconds": round(info.warmup_seconds, 3),
                }
            )
        if service.ready_front():
            # A queue front (--role front) is ready without a model: workers generate.
            return JSONResponse(
                {**warnings, "status": "ready", "role": "front", "model": settings.model,
                 "release": settings.release}
            )  # fmt: skip
        return JSONResponse({"status": "not ready", **warnings}, status_code=503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    return router


def readiness_warnings(service: GenerationService) -> list[str]:
    """What will stop this replica serving if nobody acts: the audit log's volume
    filling up (the audit is fail-closed)."""
    audit = service.admission.audit
    free = getattr(audit, "free_bytes", lambda: math.nan)()
    floor = service.settings.audit_min_free_bytes
    if free < floor:
        return [
            f"the audit log's volume has {int(free)} bytes free, under "
            f"--audit-min-free-bytes {floor}: serving stops when it is full"
        ]
    return []


def metrics_app(service: GenerationService) -> ASGIApp:
    """The separate Prometheus listener (``--metrics-port``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") == "/metrics":
            response = Response(service.metrics.render(), media_type=service.metrics.content_type)
        else:
            response = Response(b"not found; try /metrics\n", status_code=404)
        await response(scope, receive, send)

    return app

"""The REST adapter (FastAPI): converts HTTP to and from the service's types.

``POST /generate`` takes the article's JSON body and answers ``image/png`` (the first
image), or with ``Accept: application/json`` every image in base64 with seeds and
timings. Errors are ``{"error": {"code", "message", "field"}}`` with the status from
:data:`flux_server.errors.STATUS`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flux_server.editing import EDIT_FIELDS, edit_body_schema, edit_options
from flux_server.errors import (
    Cancelled,
    InternalError,
    InvalidRequest,
    MalformedRequest,
    QueueFull,
    ServeError,
    status_of,
)
from flux_server.images import check_upload_names, decode_base64
from flux_server.params import GenerateParams, validation_error
from flux_server.service import CallContext, GenerationResult, GenerationService, new_request_id
from flux_server.vqa import question_fields, vqa_body_schema

log = logging.getLogger(__name__)

T = TypeVar("T")

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ROUTES = {"/generate", "/edit", "/vqa", "/v1/presets", "/healthz", "/readyz", "/metrics"}
MAX_TIMEOUT_S = 3600.0
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}

# What /openapi.json says of the headers a call may send and of its error answers.
CALL_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-Priority",
        "in": "header",
        "required": False,
        "description": "high: the priority lane (goes ahead of normal requests, not batched).",
        "schema": {"type": "string", "enum": ["normal", "high"], "default": "normal"},
    },
    {
        "name": "X-Request-Timeout",
        "in": "header",
        "required": False,
        "description": "Deadline in seconds; past it the answer is 504.",
        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
    },
    {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": "Your id for the request (echoed, and in the server's logs).",
        "schema": {"type": "string", "maxLength": 128},
    },
]
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
            "required": ["code", "message", "field"],
        }
    },
    "required": ["error"],
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for status, text in (
        (400, "Not a JSON object, or a body over --max-body-bytes."),
        (401, "A missing or unknown API key."),
        (422, "A value out of range; `field` names it."),
        (429, "The queue is full; see Retry-After."),
        (503, "Loading or draining; retry."),
        (504, "The deadline passed."),
    )
}


def error_response(error: ServeError, request_id: str | None = None) -> JSONResponse:
    headers = {"X-Request-Id": request_id} if request_id else {}
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(error.to_json(), status_code=status_of(error).http, headers=headers)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` (by Content-Length, or while streaming)
    before the application buffers them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = MalformedRequest(
            f"the request body is over the limit of {self.max_bytes} bytes", "body"
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(error)(scope, receive, send)
                return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise error
            return message

        try:
            await self.app(scope, limited_receive, send)
        except MalformedRequest as exc:
            if not too_large:
                raise
            await error_response(exc)(scope, receive, send)


class RequestMetrics:
    """Counts answers by endpoint and status, and their durations."""

    def __init__(self, app: ASGIApp, service: GenerationService) -> None:
        self.app = app
        self.metrics = service.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ROUTES else "other"
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if endpoint not in {"/metrics", "/healthz", "/readyz"}:
                self.metrics.requests.labels(endpoint=f"rest:{endpoint}", code=str(status)).inc()
                self.metrics.request_duration.labels(endpoint=f"rest:{endpoint}").observe(
                    time.perf_counter() - started
                )


async def until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it (leaving the queue) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise Cancelled("the client went away")
    return task.result()


def context_from(request: Request, endpoint: str) -> CallContext:
    headers = request.headers
    given = headers.get("x-request-id", "")
    request.state.request_id = given if 0 < len(given) <= 128 else new_request_id()
    timeout: float | None = None
    raw_timeout = headers.get("x-request-timeout")
    if raw_timeout is not None:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = math.nan
        if not (0 < timeout <= MAX_TIMEOUT_S):
            raise InvalidRequest(
                f"X-Request-Timeout must be seconds in (0, {MAX_TIMEOUT_S:g}]",
                "X-Request-Timeout",
            )
    priority = headers.get("x-priority", "normal").strip().lower()
    if priority not in {"high", "normal"}:
        raise InvalidRequest("X-Priority must be 'high' or 'normal'", "X-Priority")
    return CallContext(
        endpoint=endpoint,
        request_id=request.state.request_id,
        authorization=headers.get("authorization"),
        priority=priority == "high",
        timeout=timeout,
    )


def result_json(result: GenerationResult) -> dict[str, Any]:
    return {
        "images": [
            {
                "b64": base64.b64encode(image.data).decode("ascii"),
                "seed": image.seed,
                "format": image.format,
                "width": image.width,
                "height": image.height,
            }
            for image in result.images
        ],
        "request_id": result.request_id,
        "release": result.release,
        "model": result.model,
        "batch_size": result.batch_size,
        "timings": {
            "queue_ms": round(result.queue_ms, 3),
            "inference_ms": round(result.inference_ms, 3),
            "total_ms": round(result.total_ms, 3),
        },
        "cache_hit": result.cache_hit,
    }


def result_response(request: Request, result: GenerationResult) -> Response:
    first = result.images[0]
    headers = {
        "X-Request-Id": result.request_id,
        "X-Seed": str(first.seed),
        "X-Batch-Size": str(result.batch_size),
        "X-Release": result.release,
        "X-Cache-Hit": "true" if result.cache_hit else "false",
    }
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(result_json(result), headers=headers)
    return Response(first.data, media_type=MEDIA_TYPES[first.format], headers=headers)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise MalformedRequest("the request body is empty; send a JSON object", "body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}", "body") from None
    except RecursionError:
        raise MalformedRequest("the body's JSON is nested too deeply", "body") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object", "body")
    return body


def refuse_query(request: Request) -> None:
    """Parameters belong in the body; a query string would otherwise be ignored."""
    for name in request.query_params:
        raise MalformedRequest(
            f"query parameters are not read: send {name!r} in the JSON body", name
        )


def parse_params(body: dict[str, Any]) -> GenerateParams:
    try:
        return GenerateParams.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


_FORM_JSON_FIELDS = {"adapters"}


async def form_fields(request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Text fields and uploaded files of a multipart form."""
    try:
        form = await request.form()
    except Exception as exc:  # multipart parse errors have no common base class
        raise MalformedRequest(f"the multipart form cannot be read: {exc}", "body") from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        if hasattr(value, "read"):
            files[name] = await value.read()
        elif name in _FORM_JSON_FIELDS:
            try:
                fields[name] = json.loads(value)
            except json.JSONDecodeError:
                raise InvalidRequest(f"{name} must be JSON", name) from None
        else:
            fields[name] = value
    return fields, files


async def upload_fields(
    request: Request, file_names: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Text fields and image bytes of a multipart form, or of a JSON body whose
    ``file_names`` carry base64; other uploaded files are refused, not ignored."""
    if request.headers.get("content-type", "").startswith("application/json"):
        body: dict[str, Any] = await json_body(request)
        files = {
            name: decode_base64(body.pop(name), name)
            for name in file_names
            if body.get(name) is not None
        }
        return body, files
    fields, files = await form_fields(request)
    check_upload_names(files, file_names)
    return fields, files


def create_app(service: GenerationService) -> FastAPI:
    """The REST application over ``service`` (one per server; no module globals)."""
    settings = service.settings
    app = FastAPI(
        title="fluxserve",
        version="v1",
        description="FLUX text-to-image, editing and VQA. Errors: "
        '{"error": {"code", "message", "field"}}.',
    )

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        if not isinstance(exc, QueueFull):
            service.audit_refusal(
                CallContext(endpoint=f"rest:{request.url.path}", request_id=rid or ""),
                exc,
                status_of(exc).http,
            )
        return error_response(exc, rid)

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

    @app.post(
        "/generate",
        summary="Generate images",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenerateParams.model_json_schema()}},
            },
            "parameters": CALL_HEADERS,
        },
        responses={200: {"content": {"image/png": {}, "application/json": {}}}, **ERROR_RESPONSES},
    )
    async def generate(request: Request) -> Response:
        ctx = context_from(request, "rest:/generate")
        refuse_query(request)
        params = parse_params(await json_body(request))
        result = await unless_disconnected(request, service.generate(params, ctx))
        return result_response(request, result)

    params_schema = GenerateParams.model_json_schema()

    @app.post(
        "/edit",
        summary="Edit an image (multipart: image, mask?, prompt, strength, mode; "
        "or JSON with base64 image and mask)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": edit_body_schema(params_schema, upload=True)},
                    "application/json": {"schema": edit_body_schema(params_schema, upload=False)},
                },
            }
        },
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
    )
    async def edit(request: Request) -> Response:
        ctx = context_from(request, "rest:/edit")
        fields, files = await upload_fields(request, ("image", "mask"))
        if "image" not in files:
            raise InvalidRequest(
                "send the image to edit (an 'image' file, or base64 in JSON)", "image"
            )
        mode, strength = edit_options(fields)
        params = parse_params({k: v for k, v in fields.items() if k not in EDIT_FIELDS})
        result = await unless_disconnected(
            request,
            service.edit(
                image=files["image"],
                mask=files.get("mask"),
                mode=mode,
                strength=strength,
                params=params,
                ctx=ctx,
            ),
        )
        return result_response(request, result)

    @app.post(
        "/vqa",
        summary="Answer a question about an image (multipart, or JSON base64)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": vqa_body_schema(upload=True)},
                    "application/json": {"schema": vqa_body_schema(upload=False)},
                },
            }
        },
    )
    async def vqa(request: Request) -> JSONResponse:
        ctx = context_from(request, "rest:/vqa")
        fields, files = await upload_fields(request, ("image",))
        if "image" not in files:
            raise InvalidRequest("send the image (a file, or base64 in JSON)", "image")
        question, max_tokens = question_fields(fields)
        answer = await unless_disconnected(
            request,
            service.vqa(
                image=files["image"],
                question=question,
                max_tokens=max_tokens,
                ctx=ctx,
            ),
        )
        return JSONResponse(
            {"answer": answer, "request_id": ctx.request_id, "model": settings.vqa_model},
            headers={"X-Request-Id": ctx.request_id},
        )

    @app.get("/v1/presets", summary="Style presets")
    @app.get("/presets", summary="Style presets (same as /v1/presets)")
    async def presets() -> dict[str, Any]:
        return {
            "presets": [
                {"name": name, **json.loads(preset.to_json())}
                for name, preset in sorted(service.list_presets().items())
            ]
        }

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Readiness: model loaded and warmed up")
    async def readyz() -> JSONResponse:
        if service.ready and service.engine is not None:
            info = service.engine.info
            return JSONResponse(
                {
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
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    wrapped = RequestMetrics(BodyLimit(app, settings.max_body_bytes), service)
    app.state.asgi = wrapped
    return app


def asgi_app(service: GenerationService) -> ASGIApp:
    """The application with the body limit and request metrics around it."""
    return create_app(service).state.asgi


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

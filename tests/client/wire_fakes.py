"""Small real servers that speak the fluxserve wire contract (gRPC and REST), for testing the
SDK's retries, timeouts and request building over real sockets without a model: images are
flat colours derived from the seed. The error contract itself is tested against the real
server (test_error_contract.py), never against these.

A ``Script`` shared by both servers says how the next requests fail, and records what
arrived, so tests can check both directions of the wire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_client.wire import WireError, pb, pb_grpc, to_grpc_status

DEFAULT_SIZE = 64
DEFAULT_SEED = 1234
PRESETS = {
    "cyberpunk": {
        "promptTemplate": "{prompt}, neon, cyberpunk",
        "negativePrompt": "blurry",
        "steps": 12,
        "lora": {"name": "neon", "scale": 0.8},
    },
    "plain": {"promptTemplate": "{prompt}"},
}


class Failure(Exception):
    """A contract error: (HTTP status, gRPC code, message, field, retry-after)."""

    def __init__(
        self,
        http: int,
        code: grpc.StatusCode,
        message: str,
        field: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http, self.code, self.message, self.field = http, code, message, field
        self.error_code = error_code or code.name.lower()
        self.retry_after: str | None = "2" if http == 429 else None


FAILURES = {
    "unavailable": lambda: Failure(503, grpc.StatusCode.UNAVAILABLE, "model not ready"),
    "overloaded": lambda: Failure(429, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full (64)"),
    "internal": lambda: Failure(500, grpc.StatusCode.INTERNAL, "out of memory"),
}


@dataclass
class Script:
    """How the fake servers behave next, and what they saw."""

    fail_next: list[str] = field(default_factory=list)
    """Failures (keys of FAILURES, or "hang") for the next requests, in order."""
    api_key: str | None = None
    """When set, requests must carry `authorization: Bearer <api_key>`."""
    seen: list[dict[str, Any]] = field(default_factory=list)
    """One record per request that arrived: its endpoint, fields, auth and priority."""
    release: threading.Event = field(default_factory=threading.Event)
    """Set to let hanging requests go (at teardown)."""
    ready: bool = True
    """What the health checks (gRPC health, GET /readyz) report."""

    def reset(self) -> None:
        self.ready = True
        self.fail_next.clear()
        self.api_key = None
        self.seen.clear()

    def calls(self, endpoint: str) -> int:
        return sum(1 for record in self.seen if record["endpoint"] == endpoint)


def _png(width: int, height: int, seed: int, fmt: str) -> bytes:
    colour = (seed % 256, (seed // 256) % 256, (seed * 7) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt.upper())
    return buffer.getvalue()


async def _admit(
    script: Script, endpoint: str, record: dict[str, Any], headers: Mapping[str, str]
) -> None:
    """What the real server does before work: authenticate, then (here) scripted failures."""
    auth = headers.get("authorization")
    record = {
        "endpoint": endpoint,
        "authorization": auth,
        "request_id": headers.get("x-request-id"),
        "user_agent": headers.get("user-agent"),
        **record,
    }
    script.seen.append(record)
    if script.api_key is not None and auth != f"Bearer {script.api_key}":
        if auth is None:
            raise Failure(401, grpc.StatusCode.UNAUTHENTICATED, "an API key is required")
        raise Failure(401, grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
    if record.get("priority") == "high" and script.api_key is not None:
        raise Failure(403, grpc.StatusCode.PERMISSION_DENIED, "this key may not use priority")
    if script.fail_next:
        kind = script.fail_next.pop(0)
        if kind == "hang":
            await asyncio.to_thread(script.release.wait, 30)
        else:
            raise FAILURES[kind]()


def _generate(params: dict[str, Any], size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The fake engine: validates like the server and returns the REST JSON result."""
    prompt = params.get("prompt", "")
    if not prompt.strip():
        raise Failure(422, grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty", "prompt")
    for name in ("width", "height"):
        value = params.get(name)
        if value is not None and (value % 16 or not 16 <= value <= 2048):
            raise Failure(
                422,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name} must be a multiple of 16 between 16 and 2048, got {value}",
                name,
            )
    preset = params.get("style_preset")
    if preset is not None and preset not in PRESETS:
        raise Failure(
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown style preset {preset!r}",
            "style_preset",
        )
    width = params.get("width") or (size[0] if size else DEFAULT_SIZE)
    height = params.get("height") or (size[1] if size else DEFAULT_SIZE)
    seed = params.get("seed", DEFAULT_SEED)
    fmt = params.get("output_format") or "png"
    images = [
        {
            "b64": base64.b64encode(_png(width, height, seed + i, fmt)).decode(),
            "seed": seed + i,
            "format": fmt,
            "width": width,
            "height": height,
        }
        for i in range(params.get("num_images") or 1)
    ]
    return {
        "images": images,
        "request_id": uuid.uuid4().hex,
        "release": "v0.0.0-test",
        "model": "fake",
        "batch_size": 1,
        "timings": {"queue_ms": 1.0, "inference_ms": 2.0, "total_ms": 3.5},
        "cache_hit": False,
    }


# -- gRPC --------------------------------------------------------------------------

_FORMATS = {pb.IMAGE_FORMAT_JPEG: "jpeg", pb.IMAGE_FORMAT_WEBP: "webp"}
_FORMAT_PB = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}


def params_from_proto(message: pb.GenerationParams) -> dict[str, Any]:
    params: dict[str, Any] = {"prompt": message.prompt}
    for descriptor, value in message.ListFields():
        if descriptor.has_presence:
            params[descriptor.name] = value
    if message.output_format in _FORMATS:
        params["output_format"] = _FORMATS[message.output_format]
    if message.priority == pb.PRIORITY_HIGH:
        params["priority"] = "high"
    if message.adapters:
        params["adapters"] = [{"name": a.name, "scale": a.scale} for a in message.adapters]
    return params


def response_to_proto(result: dict[str, Any]) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        images=[
            pb.Image(
                data=base64.b64decode(i["b64"]),
                format=_FORMAT_PB[i["format"]],
                width=i["width"],
                height=i["height"],
                seed=i["seed"],
            )
            for i in result["images"]
        ],
        request_id=result["request_id"],
        release=result["release"],
        model=result["model"],
        batch_size=result["batch_size"],
        timings=pb.Timings(**result["timings"]),
        cache_hit=result["cache_hit"],
    )


class FakeServicer(pb_grpc.FluxServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def _run(self, context: grpc.aio.ServicerContext, coro: Any) -> Any:
        try:
            return await coro
        except Failure as failure:
            retry_after = float(failure.retry_after) if failure.retry_after else None
            wire = WireError(failure.error_code, failure.message, failure.field, retry_after)
            status = to_grpc_status(wire)
            await context.abort(status.code, status.details, status.trailing_metadata)

    @staticmethod
    def _headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
        return dict(context.invocation_metadata() or ())

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        async def work() -> pb.GenerateResponse:
            params = params_from_proto(request.params)
            await _admit(self.script, "generate", params, self._headers(context))
            return response_to_proto(_generate(params))

        return await self._run(context, work())

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.GenerateEvent]:
        params = params_from_proto(request.params)
        result = await self._run(context, self._stream_result(params, context))
        steps = params.get("steps", 4)
        for step in range(1, steps + 1):
            yield pb.GenerateEvent(
                progress=pb.Progress(request_id=result.request_id, step=step, total_steps=steps)
            )
        yield pb.GenerateEvent(result=result)

    async def _stream_result(self, params: dict[str, Any], context: Any) -> pb.GenerateResponse:
        await _admit(self.script, "stream", params, self._headers(context))
        return response_to_proto(_generate(params))

    async def ListPresets(self, request: Any, context: Any) -> pb.ListPresetsResponse:
        async def work() -> pb.ListPresetsResponse:
            await _admit(self.script, "presets", {}, self._headers(context))
            presets = []
            for name, body in PRESETS.items():
                preset = pb.Preset(name=name, prompt_template=body["promptTemplate"])
                if "negativePrompt" in body:
                    preset.negative_prompt = body["negativePrompt"]
                if "steps" in body:
                    preset.steps = body["steps"]
                if "lora" in body:
                    preset.lora.CopyFrom(pb.Adapter(**body["lora"]))
                presets.append(preset)
            return pb.ListPresetsResponse(presets=presets)

        return await self._run(context, work())

    async def Edit(self, request: pb.EditRequest, context: Any) -> pb.GenerateResponse:
        async def work() -> pb.GenerateResponse:
            params = params_from_proto(request.params)
            record = {
                **params,
                "image": request.image,
                "mask": request.mask if request.HasField("mask") else None,
                "strength": request.strength if request.HasField("strength") else None,
                "mode": pb.EditMode.Name(request.mode).removeprefix("EDIT_MODE_").lower(),
            }
            await _admit(self.script, "edit", record, self._headers(context))
            size = _decode_size(request.image)
            return response_to_proto(_generate(params, size))

        return await self._run(context, work())

    async def VQA(self, request: pb.VQARequest, context: Any) -> pb.VQAResponse:
        async def work() -> pb.VQAResponse:
            record = {"image": request.image, "question": request.question}
            record["max_tokens"] = request.max_tokens
            await _admit(self.script, "vqa", record, self._headers(context))
            return pb.VQAResponse(answer=_answer(request.image, request.question), model="fake")

        return await self._run(context, work())


def _decode_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception as exc:
        raise Failure(
            400, grpc.StatusCode.INVALID_ARGUMENT, "image is not a PNG/JPEG/WEBP", "image"
        ) from exc


def _answer(image: bytes, question: str) -> str:
    if not question.strip():
        raise Failure(400, grpc.StatusCode.INVALID_ARGUMENT, "question is empty", "question")
    width, height = _decode_size(image)
    return f"a {width}x{height} image; you asked: {question}"


class FakeHealth(health_pb2_grpc.HealthServicer):
    """Standard gRPC health checking, SERVING when the script says ready."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=serving if self.script.ready else not_serving)


# -- REST --------------------------------------------------------------------------


def _error(failure: Failure) -> JSONResponse:
    headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
    body = {"error": {"code": failure.error_code, "message": failure.message}}
    body["error"]["field"] = failure.field
    return JSONResponse(body, status_code=failure.http, headers=headers)


def build_app(script: Script) -> Starlette:
    async def guarded(coro: Any) -> Response:
        try:
            return await coro
        except Failure as failure:
            return _error(failure)

    async def generate(request: Request) -> Response:
        async def work() -> Response:
            try:
                params = json.loads(await request.body())
            except ValueError:
                raise Failure(
                    400, grpc.StatusCode.INVALID_ARGUMENT, "body is not JSON", "body"
                ) from None
            if request.headers.get("x-priority") == "high":
                params["priority"] = "high"
            deadline = request.headers.get("x-request-timeout")
            await _admit(script, "generate", {**params, "deadline": deadline}, request.headers)
            result = _generate(params)
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse(result)
            first = result["images"][0]
            return Response(
                base64.b64decode(first["b64"]),
                media_type="image/png",
                headers={"X-Seed": str(first["seed"]), "X-Request-Id": result["request_id"]},
            )

        return await guarded(work())

    async def presets(request: Request) -> Response:
        async def work() -> Response:
            await _admit(script, "presets", {}, request.headers)
            return JSONResponse({"presets": [{"name": n, **body} for n, body in PRESETS.items()]})

        return await guarded(work())

    async def edit(request: Request) -> Response:
        async def work() -> Response:
            form = await request.form()
            image = await form["image"].read()  # type: ignore[union-attr]
            mask = await form["mask"].read() if "mask" in form else None  # type: ignore[union-attr]
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            params: dict[str, Any] = {"prompt": fields.pop("prompt", "")}
            for name, value in fields.items():
                if name in ("width", "height", "steps", "seed", "num_images"):
                    params[name] = int(value)
                elif name in ("guidance_scale", "true_cfg_scale", "strength"):
                    params[name] = float(value)
                elif name == "adapters":
                    params[name] = json.loads(value)
                else:
                    params[name] = value
            record = {**params, "image": image, "mask": mask}
            await _admit(script, "edit", record, request.headers)
            params.pop("strength", None)
            params.pop("mode", None)
            return JSONResponse(_generate(params, _decode_size(image)))

        return await guarded(work())

    async def vqa(request: Request) -> Response:
        async def work() -> Response:
            if request.headers.get("content-type", "").startswith("application/json"):
                body = await request.json()
                image, question = base64.b64decode(body["image"]), body["question"]
                max_tokens = body.get("max_tokens", 64)
            else:
                form = await request.form()
                image = await form["image"].read()  # type: ignore[union-attr]
                question = str(form["question"])
                max_tokens = int(str(form.get("max_tokens", "64")))
            record = {"image": image, "question": question, "max_tokens": max_tokens}
            await _admit(script, "vqa", record, request.headers)
            return JSONResponse({"answer": _answer(image, question), "request_id": "r1"})

        return await guarded(work())

    async def readyz(request: Request) -> Response:
        return Response("ready" if script.ready else "loading", 200 if script.ready else 503)

    return Starlette(
        routes=[
            Route("/readyz", readyz, methods=["GET"]),
            Route("/generate", generate, methods=["POST"]),
            Route("/v1/presets", presets, methods=["GET"]),
            Route("/edit", edit, methods=["POST"]),
            Route("/vqa", vqa, methods=["POST"]),
        ]
    )


# -- both, on one loop in a thread ---------------------------------------------------


@dataclass
class FakeServers:
    script: Script
    grpc_port: int
    http_port: int

    def port(self, transport: str) -> int:
        return self.grpc_port if transport == "grpc" else self.http_port


@contextlib.contextmanager
def running_fake_servers() -> Iterator[FakeServers]:
    """Serve the fake gRPC and REST servers on 127.0.0.1 (free ports) until the block ends."""
    script = Script()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says TCP, and without it every response waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        server = grpc.aio.server()
        pb_grpc.add_FluxServiceServicer_to_server(FakeServicer(script), server)
        health_pb2_grpc.add_HealthServicer_to_server(FakeHealth(script), server)
        holder["grpc_port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        config = uvicorn.Config(build_app(script), log_level="warning", lifespan="off")
        http = uvicorn.Server(config)
        holder["http"] = http
        task = asyncio.create_task(http.serve(sockets=[sock]))
        # uvicorn exposes its readiness only as the `started` flag.
        while not http.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        ready.set()
        await task
        await server.stop(grace=None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    while not ready.wait(0.05):
        if not thread.is_alive():
            raise RuntimeError("fake servers failed to start (see the thread's traceback)")
    try:
        yield FakeServers(script, holder["grpc_port"], sock.getsockname()[1])
    finally:
        script.release.set()
        holder["http"].should_exit = True
        thread.join(30)
        loop.close()
        sock.close()

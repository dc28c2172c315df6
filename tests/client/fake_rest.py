"""The fake REST application of ``wire_fakes``."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import grpc.aio
from fake_contract import (
    PRESETS,
    Failure,
    Script,
    admit,
    answer_question,
    decode_size,
    generate_result,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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
            await admit(script, "generate", {**params, "deadline": deadline}, request.headers)
            result = generate_result(params)
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
            await admit(script, "presets", {}, request.headers)
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
            await admit(script, "edit", record, request.headers)
            params.pop("strength", None)
            params.pop("mode", None)
            return JSONResponse(generate_result(params, decode_size(image)))

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
            await admit(script, "vqa", record, request.headers)
            return JSONResponse({"answer": answer_question(image, question), "request_id": "r1"})

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

"""The fake gRPC servicers (FluxService and health) of ``wire_fakes``."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flux_client.wire import WireError, pb, pb_grpc, to_grpc_status

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
            await admit(self.script, "generate", params, self._headers(context))
            return response_to_proto(generate_result(params))

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
        await admit(self.script, "stream", params, self._headers(context))
        return response_to_proto(generate_result(params))

    async def ListPresets(self, request: Any, context: Any) -> pb.ListPresetsResponse:
        async def work() -> pb.ListPresetsResponse:
            await admit(self.script, "presets", {}, self._headers(context))
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
            await admit(self.script, "edit", record, self._headers(context))
            size = decode_size(request.image)
            return response_to_proto(generate_result(params, size))

        return await self._run(context, work())

    async def VQA(self, request: pb.VQARequest, context: Any) -> pb.VQAResponse:
        async def work() -> pb.VQAResponse:
            record = {"image": request.image, "question": request.question}
            record["max_tokens"] = request.max_tokens
            await admit(self.script, "vqa", record, self._headers(context))
            return pb.VQAResponse(
                answer=answer_question(request.image, request.question), model="fake"
            )

        return await self._run(context, work())


class FakeHealth(health_pb2_grpc.HealthServicer):
    """Standard gRPC health checking, SERVING when the script says ready."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=serving if self.script.ready else not_serving)

"""The gRPC messages to and from the core's types: a request's parameters, a result's
images, and the enum tables both directions use."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flux_contract.wire import IMAGE_FORMAT_FROM_PB, IMAGE_FORMAT_TO_PB, pb
from flux_server.api.grpc.experiments import arm_to_proto
from flux_server.errors import InvalidRequest
from flux_server.execution.previews import PreviewImage
from flux_server.requests.params import GenerateParams, validation_error
from flux_server.requests.results import GenerationResult

PRIORITIES = {pb.PRIORITY_UNSPECIFIED, pb.PRIORITY_NORMAL, pb.PRIORITY_HIGH}
EDIT_MODES = {
    pb.EDIT_MODE_UNSPECIFIED: None,
    pb.EDIT_MODE_IMG2IMG: "img2img",
    pb.EDIT_MODE_INPAINT: "inpaint",
    pb.EDIT_MODE_INSTRUCT: "instruct",
}


def params_from_proto(message: pb.GenerationParams) -> GenerateParams:
    """The request model of a proto message; unset optional fields stay unset."""
    body: dict[str, Any] = {"prompt": message.prompt}
    # Only the proto3 `optional` fields the caller set: an unset one falls to the preset,
    # then the server default.
    for descriptor, value in message.ListFields():
        if descriptor.has_presence:
            body[descriptor.name] = value
    if message.output_format not in IMAGE_FORMAT_FROM_PB:
        raise InvalidRequest(f"unknown output_format {message.output_format}", "output_format")
    if message.priority not in PRIORITIES:
        raise InvalidRequest(
            f"unknown priority {message.priority} (PRIORITY_NORMAL or PRIORITY_HIGH)", "priority"
        )
    body["output_format"] = IMAGE_FORMAT_FROM_PB[message.output_format]
    # proto3 cannot tell an unset float from 0: scale 0 means "the server's default"
    # (leaving the adapter out is how a caller turns it off).
    body["adapters"] = [
        {"name": a.name, "scale": a.scale if a.scale else None} for a in message.adapters
    ]
    try:
        return GenerateParams.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def preview_to_proto(image: PreviewImage, request_id: str) -> pb.Preview:
    return pb.Preview(
        request_id=request_id,
        step=image.step,
        total_steps=image.total,
        index=image.index,
        data=image.data,
        format=IMAGE_FORMAT_TO_PB[image.format],
        width=image.width,
        height=image.height,
    )


def result_to_proto(result: GenerationResult) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        images=[
            pb.Image(
                data=image.data,
                format=IMAGE_FORMAT_TO_PB[image.format],
                width=image.width,
                height=image.height,
                seed=image.seed,
            )
            for image in result.images
        ],
        request_id=result.request_id,
        release=result.release,
        model=result.model,
        batch_size=result.batch_size,
        timings=pb.Timings(
            queue_ms=result.queue_ms, inference_ms=result.inference_ms, total_ms=result.total_ms
        ),
        cache_hit=result.cache_hit,
        experiment=arm_to_proto(result.experiment),
    )

"""The gRPC transport (port 50051): conversions to and from ``fluxserve.v1`` messages, and
one asyncio transport that runs any operation (``_operations``) over grpc.aio."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flux_client._common import USER_AGENT, Attempt
from flux_client._operation_types import Operation
from flux_client.errors import FluxError, error_class
from flux_client.jobs import (
    JobEvent,
    JobImage,
    JobInfo,
    JobSubmission,
)
from flux_client.types import (
    EditMode,
    EditParams,
    FeedbackParams,
    FeedbackResult,
    GeneratedImage,
    GenerationParams,
    GenerationResult,
    ImageFormat,
    Preview,
    Priority,
    Progress,
    StreamEvent,
    Timings,
    VqaParams,
    VqaResult,
)
from flux_contract.experiment_counts import ArmCounts, ExperimentCounts, ExperimentsCounts
from flux_contract.experiments import ExperimentArm
from flux_contract.presets import PresetLora, StylePreset
from flux_contract.wire import (
    AUTHORIZATION_METADATA,
    IMAGE_FORMAT_FROM_PB,
    IMAGE_FORMAT_TO_PB,
    MAX_MESSAGE_BYTES,
    REQUEST_ID_METADATA,
    USER_ID_METADATA,
    from_grpc_status,
    pb,
    pb_grpc,
)

Req = TypeVar("Req")
Res = TypeVar("Res")

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.primary_user_agent", USER_AGENT),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

_PRIORITY_TO_PB = {Priority.NORMAL: pb.PRIORITY_NORMAL, Priority.HIGH: pb.PRIORITY_HIGH}
_MODE_TO_PB = {
    EditMode.IMG2IMG: pb.EDIT_MODE_IMG2IMG,
    EditMode.INPAINT: pb.EDIT_MODE_INPAINT,
    EditMode.INSTRUCT: pb.EDIT_MODE_INSTRUCT,
}

OPTIONAL_PARAMS = tuple(f.name for f in pb.GenerationParams.DESCRIPTOR.fields if f.has_presence)
"""The proto3 ``optional`` generation fields: unset on the wire means "the preset's value,
then the server's default", so they are only set when given."""


def params_to_proto(params: GenerationParams) -> pb.GenerationParams:
    message = pb.GenerationParams(
        prompt=params.prompt,
        priority=_PRIORITY_TO_PB[params.priority],
        adapters=[pb.Adapter(name=a.name, scale=a.scale) for a in params.adapters],
    )
    if params.output_format is not None:
        message.output_format = IMAGE_FORMAT_TO_PB[params.output_format.value]
    # Unset stays unset on the wire (proto3 `optional`), so the preset's value applies.
    for name in OPTIONAL_PARAMS:
        value = getattr(params, name)
        if value is not None:
            setattr(message, name, value)
    return message


def edit_to_proto(edit: EditParams) -> pb.EditRequest:
    message = pb.EditRequest(image=edit.image, params=params_to_proto(edit.params))
    if edit.mask is not None:
        message.mask = edit.mask
    if edit.strength is not None:
        message.strength = edit.strength
    if edit.mode is not None:
        message.mode = _MODE_TO_PB[edit.mode]
    return message


def result_from_proto(message: pb.GenerateResponse) -> GenerationResult:
    return GenerationResult(
        images=[
            GeneratedImage(
                data=image.data,
                format=ImageFormat(IMAGE_FORMAT_FROM_PB.get(image.format, "png")),
                width=image.width,
                height=image.height,
                seed=image.seed,
            )
            for image in message.images
        ],
        request_id=message.request_id,
        release=message.release,
        model=message.model,
        batch_size=message.batch_size,
        timings=Timings(
            queue_ms=message.timings.queue_ms,
            inference_ms=message.timings.inference_ms,
            total_ms=message.timings.total_ms,
        ),
        cache_hit=message.cache_hit,
        experiment=arm_from_proto(message.experiment) if message.HasField("experiment") else None,
    )


def arm_from_proto(message: pb.ExperimentArm) -> ExperimentArm:
    """The arm of a result (``GenerateResponse``) or of a job (``Job``)."""
    return ExperimentArm(name=message.name, arm=message.arm, preset=message.preset)


def params_metadata(params: GenerationParams) -> tuple[tuple[str, str], ...]:
    """What a generation says besides its message: ``x-user-id`` and more headers."""
    metadata = [(name.lower(), value) for name, value in params.headers.items()]
    if params.user_id is not None:
        metadata.append((USER_ID_METADATA, params.user_id))
    return tuple(metadata)


def feedback_to_proto(feedback: FeedbackParams) -> pb.FeedbackRequest:
    return pb.FeedbackRequest(
        request_id=feedback.request_id, event=feedback.event, value=feedback.value
    )


def experiments_from_proto(message: pb.ListExperimentsResponse) -> ExperimentsCounts:
    return ExperimentsCounts(
        experiments=[
            ExperimentCounts(
                name=e.name,
                preset=e.preset or None,
                arms=[
                    ArmCounts(
                        name=a.name,
                        preset=a.preset or None,
                        weight=a.weight,
                        requests=a.requests,
                        images=a.images,
                        gpu_seconds=a.gpu_seconds,
                        duration_buckets=dict(a.duration_buckets),
                        events=dict(a.events),
                    )
                    for a in e.arms
                ],
            )
            for e in message.experiments
        ]
    )


def feedback_from_proto(message: pb.FeedbackResponse) -> FeedbackResult:
    # The message's fields are the result's, by the same names.
    return FeedbackResult(**{name: getattr(message, name) for name in FeedbackResult.model_fields})


def event_from_proto(message: pb.GenerateEvent) -> StreamEvent:
    kind = message.WhichOneof("event")
    if kind == "progress":
        p = message.progress
        return Progress(request_id=p.request_id, step=p.step, total_steps=p.total_steps)
    if kind == "preview":
        v = message.preview
        fields = {name: getattr(v, name) for name in Preview.model_fields if name != "format"}
        return Preview(
            **fields, format=ImageFormat.parse(IMAGE_FORMAT_FROM_PB.get(v.format, "webp"))
        )
    return result_from_proto(message.result)


def presets_from_proto(message: pb.ListPresetsResponse) -> dict[str, StylePreset]:
    presets: dict[str, StylePreset] = {}
    for p in message.presets:
        presets[p.name] = StylePreset(
            prompt_template=p.prompt_template,
            negative_prompt=p.negative_prompt if p.HasField("negative_prompt") else None,
            guidance_scale=p.guidance_scale if p.HasField("guidance_scale") else None,
            steps=p.steps if p.HasField("steps") else None,
            width=p.width if p.HasField("width") else None,
            height=p.height if p.HasField("height") else None,
            lora=PresetLora(name=p.lora.name, scale=p.lora.scale) if p.HasField("lora") else None,
        )
    return presets


def vqa_to_proto(vqa: VqaParams) -> pb.VQARequest:
    return pb.VQARequest(image=vqa.image, question=vqa.question, max_tokens=vqa.max_tokens)


def vqa_from_proto(message: pb.VQAResponse) -> VqaResult:
    return VqaResult(answer=message.answer, request_id=message.request_id, model=message.model)


def submission_to_proto(submission: JobSubmission) -> pb.SubmitRequest:
    message = pb.SubmitRequest(
        params=params_to_proto(submission.params),
        webhook_events_filter=list(submission.webhook_events_filter),
    )
    if submission.webhook is not None:
        message.webhook = submission.webhook
    return message


def job_from_proto(message: pb.Job) -> JobInfo:
    """The job as ``GET /jobs/{id}`` would describe it, its images with their bytes."""

    def optional(owner: Any, name: str) -> Any:
        return getattr(owner, name) if owner.HasField(name) else None

    body: dict[str, Any] = {
        "id": message.id,
        "status": message.status,
        "created_at": message.created_at or None,
        "started_at": optional(message, "started_at"),
        "completed_at": optional(message, "completed_at"),
        "queue_position": optional(message, "queue_position"),
        "position": optional(message, "position"),
        "eta_seconds": optional(message, "eta_seconds"),
        "warming_up": bool(optional(message, "warming_up")),
    }
    if message.HasField("progress"):
        body["progress"] = {"step": message.progress.step, "total": message.progress.total}
    if message.HasField("error"):
        error = message.error
        body["error"] = {
            "code": error.code,
            "message": error.message,
            "field": optional(error, "field"),
        }
    images = tuple(
        JobImage(
            seed=image.seed,
            format=IMAGE_FORMAT_FROM_PB.get(image.format, "png"),
            width=image.width,
            height=image.height,
            data=image.data,
        )
        for image in message.images
    )
    experiment = arm_from_proto(message.experiment) if message.HasField("experiment") else None
    return dataclasses.replace(JobInfo.from_json(body), images=images, experiment=experiment)


def job_event_from_proto(message: pb.JobEvent) -> JobEvent:
    data = json.loads(message.data_json) if message.data_json else {}
    return JobEvent(message.id, message.seq, message.event, data)


def error_from_rpc(error: grpc.RpcError) -> FluxError:
    """The SDK error for a failed call: the class of the reason in the server's rich
    status, its message, field and retry advice."""
    code: grpc.StatusCode = error.code()
    wire = from_grpc_status(code, error.details(), error.trailing_metadata())
    return error_class(wire.reason)(
        wire.message,
        field=wire.field,
        code=wire.reason,
        grpc_code=code.name,
        request_id=wire.request_id,
        retry_after=wire.retry_after,
    )


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION_METADATA, f"Bearer {api_key}"),) if api_key else ()


class AsyncGrpcTransport:
    """Runs any operation over grpc.aio. The channel is opened on first use, inside the
    running loop, and belongs to it."""

    def __init__(self, target: str, *, api_key: str | None, secure: bool) -> None:
        self._target = target
        self._secure = secure
        self._metadata = _metadata(api_key)
        self._channel: grpc.aio.Channel | None = None

    def _get_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = (
                grpc.aio.secure_channel(
                    self._target, grpc.ssl_channel_credentials(), CHANNEL_OPTIONS
                )
                if self._secure
                else grpc.aio.insecure_channel(self._target, CHANNEL_OPTIONS)
            )
        return self._channel

    def _method(self, op: Operation[Req, Res]) -> Any:
        return getattr(pb_grpc.FluxServiceStub(self._get_channel()), op.grpc_method)

    def _call_metadata(
        self, call: Attempt, op: Operation[Req, Res], request: Req
    ) -> tuple[tuple[str, str], ...]:
        extra = op.metadata(request) if op.metadata is not None else ()
        return (*self._metadata, *extra, (REQUEST_ID_METADATA, call.request_id))

    async def unary(self, op: Operation[Req, Res], request: Req, call: Attempt) -> Res:
        try:
            response = await self._method(op)(
                op.to_proto(request),
                timeout=call.timeout,
                metadata=self._call_metadata(call, op, request),
            )
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        return op.from_proto(response)

    async def stream(
        self, op: Operation[Req, Res], request: Req, call: Attempt
    ) -> AsyncIterator[Res]:
        rpc = self._method(op)(
            op.to_proto(request),
            timeout=call.timeout,
            metadata=self._call_metadata(call, op, request),
        )
        try:
            async for message in rpc:
                yield op.from_proto(message)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        finally:
            rpc.cancel()  # a caller that stops iterating early frees the server's slot

    async def ready(self, timeout: float | None) -> bool:
        """Whether standard gRPC health checking reports SERVING (model loaded, warmed)."""
        stub = health_pb2_grpc.HealthStub(self._get_channel())
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

"""The gRPC adapter (grpc.aio): ``fluxserve.v1.FluxService`` over the service, plus the
standard health service and reflection.

Errors end the call with gRPC's rich status, built by :func:`flux_contract.wire.to_grpc_status`
(the code from the wire table, ErrorInfo with the reason, the field at fault, RetryInfo on
RESOURCE_EXHAUSTED) and ``x-request-id`` in trailing metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flux_contract.wire import (
    MAX_MESSAGE_BYTES,
    REQUEST_ID_METADATA,
    SERVICE_NAME,
    pb,
    pb_grpc,
)
from flux_server.api.grpc import experiments as grpc_experiments
from flux_server.api.grpc.calls import Calls
from flux_server.api.grpc.convert import (
    EDIT_MODES,
    params_from_proto,
    preview_to_proto,
    result_to_proto,
)
from flux_server.api.grpc.guard import GuardInterceptor
from flux_server.api.grpc.jobs import JobRpcs
from flux_server.errors import InvalidRequest
from flux_server.execution.previews import PreviewImage
from flux_server.requests.context import CallContext
from flux_server.requests.results import GenerationResult
from flux_server.service.core import GenerationService
from flux_server.service.intake import EditRequest

log = logging.getLogger(__name__)


class FluxServicer(pb_grpc.FluxServiceServicer):
    """``fluxserve.v1.FluxService``: each RPC converts its message, calls the service
    through :class:`Calls`, and converts the answer; the job RPCs are :class:`JobRpcs`'."""

    def __init__(self, service: GenerationService) -> None:
        self.service = service
        self.calls = Calls(service)
        self.jobs = JobRpcs(service, self.calls)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        ctx = self.calls.context(context, "Generate", request.params.priority == pb.PRIORITY_HIGH)

        async def work() -> pb.GenerateResponse:
            params = params_from_proto(request.params)
            return _answer(context, ctx, await self.service.generate(params, ctx))

        return await self.calls.run(context, ctx, work)

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateEvent]:
        ctx = self.calls.context(
            context, "GenerateStream", request.params.priority == pb.PRIORITY_HIGH
        )
        events: asyncio.Queue[pb.GenerateEvent] = asyncio.Queue()

        def progress(step: int, total: int) -> None:
            message = pb.Progress(request_id=ctx.request_id, step=step, total_steps=total)
            events.put_nowait(pb.GenerateEvent(progress=message))

        def preview(image: PreviewImage) -> None:
            events.put_nowait(pb.GenerateEvent(preview=preview_to_proto(image, ctx.request_id)))

        async def run() -> GenerationResult:
            params = params_from_proto(request.params)
            return await self.service.generate(params, ctx, progress=progress, preview=preview)

        task = asyncio.ensure_future(self.calls.run(context, ctx, run))
        try:
            while not task.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            last = _answer(context, ctx, task.result())
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        yield pb.GenerateEvent(result=last)

    async def ListPresets(
        self, request: pb.ListPresetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPresetsResponse:
        presets = []
        for name, preset in sorted(self.service.list_presets().items()):
            message = pb.Preset(name=name, prompt_template=preset.prompt_template)
            for field in ("negative_prompt", "guidance_scale", "steps", "width", "height"):
                value = getattr(preset, field)
                if value is not None:
                    setattr(message, field, value)
            if preset.lora is not None:
                message.lora.CopyFrom(pb.Adapter(name=preset.lora.name, scale=preset.lora.scale))
            presets.append(message)
        return pb.ListPresetsResponse(presets=presets)

    async def Edit(
        self, request: pb.EditRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        ctx = self.calls.context(context, "Edit", request.params.priority == pb.PRIORITY_HIGH)

        async def work() -> pb.GenerateResponse:
            if request.mode not in EDIT_MODES:
                raise InvalidRequest(f"unknown edit mode {request.mode}", "mode")
            params = params_from_proto(request.params)
            edit = EditRequest(
                request.image,
                request.mask if request.HasField("mask") else None,
                EDIT_MODES[request.mode],
                request.strength if request.HasField("strength") else None,
                params,
            )
            return _answer(context, ctx, await self.service.edit(edit, ctx))

        return await self.calls.run(context, ctx, work)

    async def VQA(
        self, request: pb.VQARequest, context: grpc.aio.ServicerContext
    ) -> pb.VQAResponse:
        ctx = self.calls.context(context, "VQA")

        async def work() -> pb.VQAResponse:
            answer = await self.service.vqa(
                image=request.image,
                question=request.question,
                max_tokens=request.max_tokens or 64,
                ctx=ctx,
            )
            return pb.VQAResponse(
                answer=answer,
                request_id=ctx.request_id,
                model=self.service.settings.vqa_model or "",
            )

        return await self.calls.run(context, ctx, work)

    async def Feedback(
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.FeedbackResponse:
        ctx = self.calls.context(context, "Feedback")
        return await self.calls.run(
            context, ctx, lambda: grpc_experiments.feedback(self.service, request, ctx)
        )

    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExperimentsResponse:
        return grpc_experiments.counts_to_proto(self.service.list_experiments())

    # -- async jobs --------------------------------------------------------------------

    async def Submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return await self.jobs.submit(request, context)

    async def GetJob(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return await self.jobs.get(request, context)

    async def CancelJob(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return await self.jobs.cancel(request, context)

    def WatchJob(
        self, request: pb.JobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvent]:
        return self.jobs.watch(request, context)


def build_grpc_server(
    service: GenerationService, host: str, port: int, *, max_connections: int | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """The gRPC server (not started), its health servicer (NOT_SERVING until the service
    is ready) and the bound port. ``max_connections``: the cap on open connections
    (default ``--max-connections``)."""
    s = service.settings
    server = grpc.aio.server(
        # The key is checked before a message is decoded (see flux_server.api.grpc.guard).
        interceptors=(GuardInterceptor(service),),
        options=(
            # One body limit for both transports: gRPC's core refuses a larger message
            # (RESOURCE_EXHAUSTED) before it is handed to Python, whoever sends it.
            ("grpc.max_receive_message_length", service.settings.max_body_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # A second server on a busy port must fail, not share it (gRPC's default).
            ("grpc.so_reuseport", 0),
            *connection_options(
                s.max_connections if max_connections is None else max_connections,
                handshake=s.header_timeout,
                idle=s.grpc_max_connection_idle,
                age=s.grpc_max_connection_age,
                grace=s.grpc_max_connection_age_grace,
            ),
        ),
    )
    pb_grpc.add_FluxServiceServicer_to_server(FluxServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"[{host}]" if ":" in host and not host.startswith("[") else host
    bound = server.add_insecure_port(f"{address}:{port}")
    return server, health_servicer, bound


def connection_options(
    max_connections: int, *, handshake: float, idle: float, age: float, grace: float
) -> list[tuple[str, int]]:
    """gRPC core's bounds on connections, as HTTP's (see :mod:`flux_server.connections`):
    a cap, a deadline for a new connection's HTTP/2 preface, idle and age limits, and
    keepalive enforcement (a client pinging more often than every 10 s, or without
    calls more than twice, gets GOAWAY ``too_many_pings``)."""

    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    return [
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.server_handshake_timeout_ms", ms(handshake)),
        ("grpc.max_connection_idle_ms", ms(idle)),
        ("grpc.max_connection_age_ms", ms(age)),
        ("grpc.max_connection_age_grace_ms", ms(grace)),
        # Dead peers: ping a connection quiet for a minute, drop it 20 s without an answer.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # What clients may do: keepalive pings every 10 s or slower, with or without calls.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 2),
    ]


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, status)


def _answer(
    context: grpc.aio.ServicerContext, ctx: CallContext, result: GenerationResult
) -> pb.GenerateResponse:
    """A generation's answer, its request id and experiment arm in the trailing metadata."""
    context.set_trailing_metadata(
        ((REQUEST_ID_METADATA, ctx.request_id), *grpc_experiments.arm_metadata(result))
    )
    return result_to_proto(result)

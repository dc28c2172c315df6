"""Async jobs over gRPC: ``Submit``, ``GetJob``, ``CancelJob`` and ``WatchJob`` (the events
of REST's Server-Sent Events stream), as a mixin of the ``FluxService`` servicer. Errors
take the same path as every call (rich status from ``flux_contract.wire``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import grpc

from flux_contract.wire import IMAGE_FORMAT_TO_PB, pb
from flux_server.api.grpc.convert import params_from_proto
from flux_server.api.grpc.experiments import arm_to_proto
from flux_server.jobs.access import OwnedJobs
from flux_server.jobs.lifecycle import iso
from flux_server.jobs.records import JobEvent, JobState, JobStatus

if TYPE_CHECKING:
    from flux_server.api.grpc.calls import Calls
    from flux_server.service.core import GenerationService


def job_to_proto(state: JobState, images: Sequence[bytes] = ()) -> pb.Job:
    """The job as ``GetJob`` answers it; ``images``: the bytes of a succeeded job's."""
    message = pb.Job(
        id=state.id,
        kind=state.kind,
        status=state.status.value,
        created_at=iso(state.created_at) or "",
    )
    if state.started_at is not None:
        message.started_at = iso(state.started_at) or ""
    if state.completed_at is not None:
        message.completed_at = iso(state.completed_at) or ""
    if state.status is JobStatus.QUEUED and state.queue_position is not None:
        message.queue_position = state.queue_position
        message.position = state.queue_position + 1
        if state.eta_seconds is not None:
            message.eta_seconds = state.eta_seconds
        message.warming_up = state.warming_up
    if state.status is JobStatus.RUNNING and state.progress is not None:
        message.progress.CopyFrom(
            pb.JobProgress(step=state.progress.step, total=state.progress.total)
        )
    if state.status is JobStatus.FAILED and state.error is not None:
        error = pb.JobError(code=state.error.code, message=state.error.message)
        if state.error.field is not None:
            error.field = state.error.field
        message.error.CopyFrom(error)
    arm = arm_to_proto(state.experiment)
    if arm is not None:
        message.experiment.CopyFrom(arm)
    for info, data in zip(state.images, images, strict=False):
        message.images.append(
            pb.Image(
                data=data,
                format=IMAGE_FORMAT_TO_PB.get(info.format, pb.IMAGE_FORMAT_PNG),
                width=info.width,
                height=info.height,
                seed=info.seed,
            )
        )
    return message


def event_to_proto(event: JobEvent) -> pb.JobEvent:
    data = json.dumps(dict(event.data), separators=(",", ":"))
    return pb.JobEvent(id=event.job_id, seq=event.seq, event=event.kind.value, data_json=data)


class JobRpcs:
    """The job RPCs of :class:`flux_server.api.grpc.servicer.FluxServicer`."""

    def __init__(self, service: GenerationService, calls: Calls) -> None:
        self.service = service
        self.calls = calls

    async def submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        ctx = self.calls.context(context, "Submit", request.params.priority == pb.PRIORITY_HIGH)
        # A job outlives the call: the call's deadline is not the job's.
        ctx = dataclasses.replace(ctx, timeout=None)

        async def work() -> pb.Job:
            params = params_from_proto(request.params)
            state = await self.service.submit(
                params,
                ctx,
                request.webhook if request.HasField("webhook") else None,
                list(request.webhook_events_filter) or None,
            )
            return job_to_proto(state)

        return await self.calls.run(context, ctx, work)

    async def get(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        ctx = self.calls.context(context, "GetJob")

        async def work() -> pb.Job:
            jobs = self.service.job_reader(ctx)
            state = await jobs.get(request.id)
            images = [await jobs.image(state, i) for i in range(len(state.images))]
            return job_to_proto(state, images)

        return await self.calls.run(context, ctx, work)

    async def cancel(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        ctx = self.calls.context(context, "CancelJob")

        async def work() -> pb.Job:
            return job_to_proto(await self.service.job_reader(ctx).cancel(request.id))

        return await self.calls.run(context, ctx, work)

    async def watch(
        self, request: pb.JobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvent]:
        ctx = self.calls.context(context, "WatchJob")

        async def first() -> tuple[OwnedJobs, JobState]:
            jobs = self.service.job_reader(ctx)  # a refused key: UNAUTHENTICATED via _call
            return jobs, await jobs.get(request.id)  # NOT_FOUND before the stream starts

        jobs, state = await self.calls.run(context, ctx, first)
        async for event in jobs.watch(state):
            yield event_to_proto(event)

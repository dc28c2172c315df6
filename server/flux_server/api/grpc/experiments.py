"""Experiments over gRPC: the ``Feedback`` and ``ListExperiments`` calls and the arm a
result carries, to and from ``fluxserve.v1`` messages."""

from __future__ import annotations

from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.wire import EXPERIMENT_METADATA, pb
from flux_server.experiments.assignment import ServedArm
from flux_server.requests.context import CallContext
from flux_server.requests.results import GenerationResult
from flux_server.service.core import GenerationService


async def feedback(
    service: GenerationService, request: pb.FeedbackRequest, ctx: CallContext
) -> pb.FeedbackResponse:
    value = request.value if request.HasField("value") else 1.0
    outcome = await service.feedback(request.request_id, request.event, value, ctx)
    return pb.FeedbackResponse(
        request_id=request.request_id,
        experiment=outcome.record.experiment,
        arm=outcome.record.arm,
        event=request.event,
        counted=outcome.counted,
    )


def counts_to_proto(counts: ExperimentsCounts) -> pb.ListExperimentsResponse:
    return pb.ListExperimentsResponse(
        experiments=[
            pb.ExperimentCounts(
                name=experiment.name,
                preset=experiment.preset or "",
                arms=[
                    pb.ArmCounts(
                        name=arm.name,
                        preset=arm.preset or "",
                        weight=arm.weight or 0,
                        requests=arm.requests,
                        images=arm.images,
                        gpu_seconds=arm.gpu_seconds,
                        duration_buckets=arm.duration_buckets,
                        events=arm.events,
                    )
                    for arm in experiment.arms
                ],
            )
            for experiment in counts.experiments
        ]
    )


def arm_to_proto(arm: ServedArm | None) -> pb.ExperimentArm | None:
    """A result's or a job's arm as gRPC answers it, or None outside any experiment."""
    if arm is None:
        return None
    return pb.ExperimentArm(name=arm.experiment, arm=arm.arm, preset=arm.preset)


def arm_metadata(result: GenerationResult) -> tuple[tuple[str, str], ...]:
    """Trailing metadata naming the arm (``x-fluxserve-experiment``), or nothing."""
    if result.experiment is None:
        return ()
    return ((EXPERIMENT_METADATA, result.experiment.header_value),)

"""Experiments as the request path sees them: one object that the admission path asks
which arm serves a request, tells when the request was served, and that the feedback
endpoints and ``GET /experiments`` call. It joins the pure assignment, the presets
directory (where the experiments live), the feedback store and the metrics.
:class:`ExperimentEntryPoints` is the service's side of it: the arm of a request, its
counting, feedback and the counts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.experiments import Experiment
from flux_contract.names import normalize
from flux_server.experiments.assignment import Assignment, assign
from flux_server.experiments.counts import experiments_counts
from flux_server.experiments.feedback import FeedbackOutcome, FeedbackStore, ServedRecord
from flux_server.metrics import Metrics
from flux_server.requests.presets_store import PresetStore

if TYPE_CHECKING:
    from flux_server.admission.gate import Admission, Trail
    from flux_server.requests.context import CallContext
    from flux_server.requests.params import GenerateParams
    from flux_server.requests.results import GenerationResult
    from flux_server.scheduling.batcher import BatchInfo


class ExperimentRuntime:
    def __init__(self, presets: PresetStore, feedback: FeedbackStore, metrics: Metrics) -> None:
        self.presets = presets
        self.feedback_store = feedback
        self.metrics = metrics
        self._described: tuple[Experiment, ...] | None = None

    def current(self) -> tuple[Experiment, ...]:
        """The experiments in force; the arm metrics follow each reload."""
        experiments = self.presets.experiments()
        if experiments is not self._described:
            self.metrics.experiments.set_experiments(experiments)
            self._described = experiments
        return experiments

    def assign(
        self, preset: str | None, user: str | None, headers: Mapping[str, str]
    ) -> Assignment | None:
        """The arm serving a request for ``preset`` (None: served as asked, no
        experiment). Raises InvalidRequest for a malformed ``X-User-Id``."""
        return assign(self.current(), preset, user, headers)

    async def served(
        self,
        request_id: str,
        assignment: Assignment,
        *,
        seconds: float,
        gpu_seconds: float,
        images: int,
    ) -> None:
        """A request served in an arm: count it, and keep its record for feedback."""
        self.metrics.experiments.observe_request(
            assignment.experiment, assignment.arm, seconds, gpu_seconds, images
        )
        await self.feedback_store.remember(
            ServedRecord(
                request_id, assignment.experiment, assignment.arm, assignment.subject, time.time()
            )
        )

    async def feedback(self, request_id: str, event: str, value: float = 1.0) -> FeedbackOutcome:
        """``POST /feedback`` / gRPC ``Feedback``: RequestNotFound (404), InvalidRequest
        naming the field, Unavailable when Redis is needed and down."""
        outcome = await self.feedback_store.record(request_id, event, value)
        if outcome.counted:
            record = outcome.record
            self.metrics.experiments.count_feedback(record.experiment, record.arm, event, value)
        return outcome

    def counts(self) -> ExperimentsCounts:
        """``GET /experiments``: the experiments this replica serves, with its counts."""
        return experiments_counts(self.current(), self.metrics.registry)


class ExperimentEntryPoints:
    """The experiment side of :class:`flux_server.service.core.GenerationService`: the arm a
    request is served in, its counting, feedback and the counts."""

    if TYPE_CHECKING:  # provided by the service
        admission: Admission
        experiments: ExperimentRuntime

    async def feedback(
        self, request_id: str, event: str, value: float, ctx: CallContext
    ) -> FeedbackOutcome:
        """Record an outcome against the arm ``request_id`` was served in (a key is
        needed where keys are)."""
        self.admission.authenticate(ctx)
        return await self.experiments.feedback(request_id, event, value)

    def list_experiments(self) -> ExperimentsCounts:
        """The experiments this replica serves, with its own counts."""
        return self.experiments.counts()

    def _arm(self, trail: Trail, params: GenerateParams) -> GenerateParams:
        """The requested preset in the form names are compared in (Unicode NFC); in an
        experiment on it, the arm's preset instead (the request's own fields still win,
        since they override any preset's)."""
        if params.style_preset is None:
            return params
        preset = normalize(params.style_preset)
        trail.experiment = self.experiments.assign(preset, trail.user, trail.ctx.headers)
        if trail.experiment is not None:
            preset = trail.experiment.preset
        return params.model_copy(update={"style_preset": preset})

    async def _served(self, trail: Trail, result: GenerationResult, info: BatchInfo | None) -> None:
        """Count a request served in an arm, and keep its record for feedback. The arm's
        GPU time is its share of the pipeline call, by images (a cache hit costs none)."""
        if trail.experiment is None:
            return
        images = len(result.images) if info is not None else 0
        gpu_seconds = info.run_s * images / max(1, info.units) if info is not None else 0.0
        await self.experiments.served(
            result.request_id,
            trail.experiment,
            seconds=result.total_ms / 1000,
            gpu_seconds=gpu_seconds,
            images=images,
        )

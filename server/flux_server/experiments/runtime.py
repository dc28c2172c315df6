"""Experiments as the request path sees them: one object that the service asks which arm
serves a request, tells when the request was served, and that the feedback endpoints and
``GET /experiments`` call. It joins the pure assignment, the experiments in force (read
from the presets directory by whoever builds it), the feedback store and the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.experiments import Experiment
from flux_server.experiments.assignment import Assignment, assign
from flux_server.experiments.counts import experiments_counts
from flux_server.experiments.feedback import FeedbackOutcome, FeedbackStore, ServedRecord
from flux_server.metrics import Metrics

ExperimentsInForce = Callable[[], tuple[Experiment, ...]]
"""The experiments in force now (the presets directory's, reloaded when it changes)."""


class ExperimentRuntime:
    def __init__(
        self, experiments: ExperimentsInForce, feedback: FeedbackStore, metrics: Metrics
    ) -> None:
        self._in_force = experiments
        self.feedback_store = feedback
        self.metrics = metrics
        self._described: tuple[Experiment, ...] | None = None

    def current(self) -> tuple[Experiment, ...]:
        """The experiments in force; the arm metrics follow each reload."""
        experiments = self._in_force()
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

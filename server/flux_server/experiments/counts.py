"""What ``GET /experiments`` answers: the experiments this replica serves, each arm with
this replica's own counts, read back from its metrics (the one record of them). The body
is the SDK's ``ExperimentsCounts``, which the report reads."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from flux_contract.experiment_counts import ArmCounts, ExperimentCounts, ExperimentsCounts
from flux_contract.experiments import Experiment

_TOTALS = {
    "fluxserve_experiment_requests_total": "requests",
    "fluxserve_experiment_images_total": "images",
    "fluxserve_experiment_gpu_seconds_total": "gpu_seconds",
}
_BUCKET = "fluxserve_experiment_request_duration_seconds_bucket"
_FEEDBACK = "fluxserve_experiment_feedback_total"


def experiments_counts(
    experiments: Sequence[Experiment], registry: CollectorRegistry
) -> ExperimentsCounts:
    arms = {
        (e.name, arm.name): ArmCounts(name=arm.name, preset=arm.preset, weight=arm.weight)
        for e in experiments
        for arm in e.arms
    }
    for metric in registry.collect():
        if not metric.name.startswith("fluxserve_experiment_"):
            continue
        for sample in metric.samples:
            key = (sample.labels.get("experiment", ""), sample.labels.get("arm", ""))
            found = arms.get(key)
            if found is None:  # an arm of a previous revision of the experiments
                continue
            if sample.name in _TOTALS:
                setattr(found, _TOTALS[sample.name], sample.value)
            elif sample.name == _BUCKET:
                found.duration_buckets[sample.labels["le"]] = sample.value
            elif sample.name == _FEEDBACK:
                found.events[sample.labels["event"]] = sample.value
    return ExperimentsCounts(
        experiments=[
            ExperimentCounts(
                name=e.name, preset=e.preset, arms=[arms[(e.name, arm.name)] for arm in e.arms]
            )
            for e in experiments
        ]
    )

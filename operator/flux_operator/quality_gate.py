"""Measure a canary's image quality: run (or look at) its quality gate Job and judge it.

The I/O beside ``prometheus``: the Job is rendered by ``render.quality_job`` and judged by
``reconcile.quality``; this module only creates it, reads it and lists its pods. Never
raises for the API's sake: what cannot be read is an Inconclusive measurement.
"""

from __future__ import annotations

import logging
from datetime import datetime

from flux_operator.kube import ApiError, KubeApi
from flux_operator.reconcile.quality import METRIC, gate_measurement
from flux_operator.reconcile.training import job_state
from flux_operator.render import Owner, Revision
from flux_operator.render.quality_job import quality_job_name, render_quality_job
from flux_operator.spec import CanaryStatus, FluxDeploymentSpec, Measurement, rfc3339
from flux_operator.spec.quality import QualityGate

logger = logging.getLogger(__name__)


async def measure_quality(
    api: KubeApi,
    owner: Owner,
    spec: FluxDeploymentSpec,
    candidate: Revision,
    canary: CanaryStatus,
    gate: QualityGate,
    now: datetime,
) -> Measurement:
    """This round's quality measurement of the canary of ``candidate``: its gate Job for
    the canary's revision and failure count, created when absent (Inconclusive until it
    ends)."""
    namespace = owner.namespace or "default"
    revision = canary.revision or 0
    name = quality_job_name(owner.name, revision, canary.failures)
    try:
        job = await api.get("Job", namespace, name)
        pods = []
        if job is None:
            obj = render_quality_job(
                owner, spec, candidate, gate, revision=revision, attempt=canary.failures
            )
            await api.create_once(obj)
            logger.info(
                "quality gate started",
                extra={"object": f"{namespace}/{owner.name}", "job": name},
            )
        elif job_state(job) != "running":
            pods = await api.list("Pod", namespace, {"job-name": name})
    except (ApiError, OSError) as exc:
        reason = f"the quality gate Job {name} cannot be run or read: {exc}"
        return Measurement(metric=METRIC, outcome="Inconclusive", reason=reason, time=rfc3339(now))
    return gate_measurement(job, pods, name, now)

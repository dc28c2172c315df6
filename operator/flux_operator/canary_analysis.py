"""One round of a canary's analysis, when one is due: the Prometheus queries (in a
thread: they must not block kopf's event loop) and the quality gate's Job, beside them
as one more measurement. The reconciler hands the round to ``plan``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from flux_operator.kube import KubeApi
from flux_operator.prometheus import measure
from flux_operator.quality_gate import measure_quality
from flux_operator.reconcile import Children, parse_status
from flux_operator.reconcile.analysis import round_summary
from flux_operator.reconcile.canary_rollout import analysis_due_for
from flux_operator.render import Owner, desired_revision
from flux_operator.spec import FluxDeploymentSpec, parse_time

logger = logging.getLogger(__name__)


async def analyse(
    api: KubeApi, owner: Owner, body: dict[str, Any], children: Children, now: str
) -> list[Any] | None:
    """The canary's analysis when one is due (None otherwise): the Prometheus queries in
    a thread (they must not block kopf's event loop), and the quality gate's Job."""
    status = parse_status(body.get("status"))
    if status.canary is None:
        return None
    try:
        spec = FluxDeploymentSpec.model_validate(body.get("spec") or {})
        # Rendering the revision checks what the schema cannot (an experiment's
        # weights, say) and raises on it.
        revision = desired_revision(owner, spec)
    except ValueError:
        return None  # plan() reports the spec's problems
    analysis = analysis_due_for(
        spec, revision, status.canary, children.canary_deployment, parse_time(now)
    )
    if analysis is None:
        return None
    measured = await asyncio.to_thread(
        measure,
        analysis,
        release=status.canary.release,
        namespace=owner.namespace or "default",
        name=owner.name,
        now=parse_time(now),
    )
    if analysis.quality is not None:  # beside the queries: a measurement like theirs
        gate = analysis.quality
        measured.append(
            await measure_quality(api, owner, spec, revision, status.canary, gate, parse_time(now))
        )
    logger.info(
        "canary analysis",
        extra={"object": f"{owner.namespace}/{owner.name}", "round": round_summary(measured)},
    )
    return measured

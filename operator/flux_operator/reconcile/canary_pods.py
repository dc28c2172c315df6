"""How many pods each side of a canary runs: for a weight (:func:`split_pods`), during the
steps (:func:`pod_counts`) and while ``NAME`` rolls to a promoted canary
(:func:`promotion_pods`). Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flux_operator.spec import FluxDeploymentSpec


@dataclass(frozen=True)
class PodSplit:
    stable: int
    canary: int

    @property
    def canary_share(self) -> int:
        """Percent of the shared Service's endpoints that are canary pods: the traffic the
        canary gets without a Gateway (kube-proxy balances per connection, not per weight)."""
        total = self.stable + self.canary
        return 0 if total == 0 else round(100 * self.canary / total)


def split_pods(total: int, weight: int, max_surge: int) -> PodSplit:
    """Pods per side while the canary holds ``weight`` percent.

    ``total`` is the pods the service runs outside a canary: ``spec.replicas``, or with
    autoscaling the HPA's ``status.desiredReplicas`` (the total it asks for, computed from
    the load on both sides, since the shared selector covers both tracks).

    - The canary gets ``ceil(total * weight / 100)`` pods, at least 1 when ``weight > 0``.
    - ``max_surge >= 1``: up to ``max_surge`` of those are extra; the stable side gives up
      the rest, so ``stable + canary <= total + max_surge`` at every step.
    - ``max_surge == 0``: the stable side gives up exactly the canary's pods
      (``stable + canary == total``) but always keeps one while ``weight < 100``, so the
      canary may get fewer pods than its weight says (``total >= 2`` is required).
    - ``weight == 0`` or ``total == 0``: no canary pods.

    With autoscaling the HPA alone writes the stable Deployment's replicas, so ``stable``
    does not apply: :func:`pod_counts` says how the
    HPA's count is shared (the canary's pods capped at ``max_surge``, or, at 0, taken from
    the stable side by lowering the HPA's bounds).
    """
    if total <= 0 or weight <= 0:
        return PodSplit(stable=max(total, 0), canary=0)
    canary = max(1, math.ceil(total * min(weight, 100) / 100))
    if max_surge >= 1:
        extra = min(max_surge, canary)
        return PodSplit(stable=total - canary + extra, canary=canary)
    if weight < 100:
        canary = min(canary, total - 1)
    return PodSplit(stable=total - canary, canary=canary)


def replicas_of(obj: dict[str, Any] | None) -> int | None:
    value = (obj or {}).get("spec", {}).get("replicas")
    return int(value) if value is not None else None


def pod_counts(
    spec: FluxDeploymentSpec,
    weight: int,
    *,
    stable: dict[str, Any] | None,
    autoscaler: dict[str, Any] | None,
) -> tuple[int | None, int, int]:
    """``(stable replicas or None for the HPA's, canary replicas, HPA reduction)``.

    Without autoscaling, :func:`split_pods` of ``spec.replicas``.
    With autoscaling the HPA keeps scaling ``NAME`` (the operator never writes its
    replicas), and T, the count it asks for (its ``status.desiredReplicas``; before it has
    one, ``NAME``'s replicas), is the total the canary's share is taken from:

    - ``maxSurge >= 1``: the canary gets ``ceil(T * weight / 100)`` pods, capped at
      ``maxSurge``, as extra pods;
    - ``maxSurge == 0``: the canary gets its share c of T (``split_pods``: at least one
      stable pod stays) and the HPA's minReplicas and maxReplicas are rendered lower by c
      for the canary's duration. The HPA, not the operator, then takes the pods from
      ``NAME``: its bounds keep ``NAME + canary`` within the spec's, and since the shared
      selector puts the canary's pods in its average, the load they take lowers what it
      asks for ``NAME``. c depends on T alone, never on the canary's own pods, so the two
      do not feed on each other.
    """
    rollout = spec.rollout.canary
    assert rollout is not None
    surge = rollout.max_surge
    scaling = spec.autoscaling
    if scaling is None:
        split = split_pods(spec.replicas, weight, surge)
        return split.stable, split.canary, 0
    status = (autoscaler or {}).get("status") or {}
    asked = status.get("desiredReplicas")
    total = int(asked) if asked is not None else (replicas_of(stable) or scaling.min_replicas)
    if surge >= 1:
        return None, min(surge, split_pods(total, weight, surge).canary), 0
    carved = split_pods(max(total, 2), weight, 0).canary
    return None, carved, carved


def promotion_pods(
    spec: FluxDeploymentSpec, stable_pods: int | None, canary_pods: int
) -> tuple[int | None, int, int]:
    """``(NAME's replicas or None for the HPA's, HPA reduction, NAME's maxSurge)`` while
    ``NAME`` rolls to a promoted canary, which keeps its ``canary_pods`` until then.

    ``NAME`` keeps the pods it had beside the canary (or the HPA its lowered bounds), and
    rolls within what is left of the surge budget: ``maxSurge`` less the extra pods in
    use (``NAME + canary - total``). With none left it replaces a pod at a time
    (maxSurge 0, maxUnavailable 1). Otherwise its own surge pod would come on top of the
    canary's, and on a cluster with no spare GPU it would never be scheduled: ``NAME``
    would miss its deadline waiting for pods the canary frees only once ``NAME`` is done.
    """
    rollout = spec.rollout.canary
    assert rollout is not None
    if spec.autoscaling is None:
        stable = stable_pods if stable_pods is not None else spec.replicas
        extra = max(0, stable + canary_pods - spec.replicas)
        return stable, 0, max(0, rollout.max_surge - extra)
    if rollout.max_surge >= 1:
        # The canary's pods were extra; the HPA keeps NAME's count.
        return None, 0, max(0, rollout.max_surge - canary_pods)
    # maxSurge 0: the canary's pods came out of the HPA's bounds; they stay lowered.
    return None, canary_pods, 0

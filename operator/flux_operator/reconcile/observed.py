"""The Deployment as the API server reports it, reduced to what the decisions need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flux_operator.render import (
    Revision,
)


@dataclass(frozen=True)
class Observed:
    """The Deployment as the API server reports it, reduced to what decisions need."""

    exists: bool
    image: str | None = None
    presets_hash: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int = 0
    available: bool = False
    deadline_exceeded: bool = False
    deadline_message: str = ""
    current: bool = True
    """The controller has seen the latest template (observedGeneration >= generation)."""

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any] | None) -> Observed:
        if deployment is None:
            return cls(exists=False)
        spec = deployment.get("spec", {})
        status = deployment.get("status") or {}
        template = spec.get("template", {})
        containers = template.get("spec", {}).get("containers") or [{}]
        annotations = template.get("metadata", {}).get("annotations") or {}
        desired = int(spec.get("replicas", 1))
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing", {})
        available_cond = conditions.get("Available", {})
        generation = deployment.get("metadata", {}).get("generation")
        observed_generation = status.get("observedGeneration")
        current = generation is None or (
            observed_generation is not None and int(observed_generation) >= int(generation)
        )
        updated = int(status.get("updatedReplicas") or 0)
        available_replicas = int(status.get("availableReplicas") or 0)
        replicas = int(status.get("replicas") or 0)
        deadline_exceeded = (
            progressing.get("reason") == "ProgressDeadlineExceeded"
            and progressing.get("status") == "False"
        )
        # As `kubectl rollout status` decides: every pod is of the new template and available.
        rolled_out = not deadline_exceeded and (
            (
                progressing.get("reason") == "NewReplicaSetAvailable"
                and progressing.get("status") == "True"
            )
            or (
                "replicas" in status
                and updated >= desired
                and replicas == updated
                and available_replicas >= updated
            )
        )
        return cls(
            exists=True,
            image=containers[0].get("image"),
            presets_hash=annotations.get("fluxserve.dev/presets-hash"),
            replicas=replicas,
            ready_replicas=int(status.get("readyReplicas") or 0),
            desired_replicas=desired,
            available=rolled_out
            and available_cond.get("status", "True") == "True"
            and available_replicas >= desired,
            deadline_exceeded=deadline_exceeded,
            deadline_message=str(progressing.get("message", "")),
            current=current,
        )

    def runs(self, revision: Revision) -> bool:
        return (
            self.exists
            and self.current
            and self.image == revision.image
            and self.presets_hash == revision.presets_hash
        )

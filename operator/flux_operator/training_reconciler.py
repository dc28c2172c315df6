"""The I/O of one FluxLoRATraining reconciliation: create its Job, follow it (its
progress from the tail of the running Pod's log), read the trainer's result from the
Pod's termination message, write status and, on request, promote the adapter. The
decisions are ``reconcile.training``'s (pure).

Promotion is the one place the operator writes a user's spec: with ``promotion: canary``
the user asked, in the training resource, for the adapter to be added to the target
FluxDeployment's ``spec.loras``; that FluxDeployment's own rollout strategy then ships it.
The write carries the resourceVersion read, so a concurrent edit is never overwritten (a
conflict is retried on the next event). A failed evaluation never touches it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from flux_operator.kube import KubeApi
from flux_operator.reconcile.training import (
    adapter_uri,
    condition,
    evaluate,
    job_state,
    lora_entry,
    parse_result,
    progress,
    progress_from_log,
    promoted_loras,
    running_pod,
    same_status,
    status_metrics,
    termination_message,
)
from flux_operator.render.training import TrainingOwner, job_name, training_inputs
from flux_operator.render.training_job import CONTAINER, render_training
from flux_operator.spec import FluxDeploymentSpec, rfc3339
from flux_operator.spec.training import FluxLoRATrainingSpec
from flux_operator.training_render import validation_problems

logger = logging.getLogger(__name__)
KIND = "FluxLoRATraining"
TERMINAL = ("Succeeded", "Failed")
#: The log tail read for progress: the trainer logs one line a step, and a few between
#: (validation, samples, checkpoints).
LOG_LINES, LOG_BYTES = 50, 32 * 1024


def _now() -> str:
    return rfc3339(datetime.now(timezone.utc))


class TrainingReconciler:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        # (namespace, name) of the trainings whose Job runs: the progress loop follows them.
        self.running: set[tuple[str, str]] = set()

    async def _write(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        meta = body["metadata"]
        status["observedGeneration"] = meta.get("generation")
        if same_status(body.get("status") or {}, status):
            return
        await self.api.merge_patch(
            KIND, meta.get("namespace"), meta["name"], {"status": status}, "status"
        )

    async def reconcile(self, namespace: str, name: str, *, read_log: bool = False) -> None:
        """Bring the status up to date; ``read_log``: also read the running trainer's
        progress from its Pod's log (the progress loop's rounds, not every event)."""
        self.running.discard((namespace, name))
        body = await self.api.get(KIND, namespace, name)
        if body is None:
            return
        old = body.get("status") or {}
        generation = body["metadata"].get("generation")
        if old.get("phase") in TERMINAL and old.get("observedGeneration") == generation:
            return  # a finished run stays finished; a new run is a new resource
        try:
            spec = FluxLoRATrainingSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = "; ".join(validation_problems(exc))
            await self._write(body, {"phase": "Failed", "message": message})
            return
        owner = TrainingOwner(name, namespace, body["metadata"].get("uid"))
        kind = "TrainJob" if spec.engine == "kubeflow" else "Job"
        job = await self.api.get(kind, namespace, job_name(name))
        if job is None:
            await self._start(body, owner, spec, kind)
            return
        state = job_state(job)
        total = spec.hyperparameters.steps  # type: ignore[attr-defined]
        if state == "running":
            self.running.add((namespace, name))
            now = await self._progress(namespace, name, total) if read_log else None
            known = old.get("progress") or {}
            if now is None:  # keep what the last read found
                now = known if known.get("total") == total else progress(0, total)
            await self._write(
                body, {"phase": "Running", "job": job_name(name), "progress": now, "message": ""}
            )
            return
        await self._finish(body, spec, state, total)

    async def _progress(self, namespace: str, name: str, total: int) -> dict[str, Any] | None:
        """The trainer's last step line, from the log tail of the Job's running Pod (the
        trainer has no API access; the kubelet keeps its log)."""
        pods = await self.api.list("Pod", namespace, {"job-name": job_name(name)})
        pod = running_pod(pods)
        if pod is None:
            return None
        text = await self.api.log_tail(namespace, pod, CONTAINER, LOG_LINES, LOG_BYTES)
        return progress_from_log(text, total)

    async def _start(
        self, body: dict[str, Any], owner: TrainingOwner, spec: FluxLoRATrainingSpec, kind: str
    ) -> None:
        deployment = None
        if spec.flux_deployment_ref:
            found = await self.api.get("FluxDeployment", owner.namespace, spec.flux_deployment_ref)
            if found is not None:
                deployment = FluxDeploymentSpec.model_validate(found.get("spec") or {})
        try:
            inputs = training_inputs(spec, deployment)
            obj = render_training(owner, spec, inputs)
        except ValidationError as exc:
            await self._write(
                body, {"phase": "Failed", "message": "; ".join(validation_problems(exc))}
            )
            return
        except ValueError as exc:
            # The FluxDeployment may appear later: wait for it (Pending), say why.
            await self._write(body, {"phase": "Pending", "message": str(exc)})
            return
        await self.api.create(obj)
        logger.info("training started", extra={"object": f"{owner.namespace}/{owner.name}"})
        self.running.add((owner.namespace or "default", owner.name))
        total = spec.hyperparameters.steps  # type: ignore[attr-defined]
        await self._write(
            body,
            {"phase": "Running", "job": obj["metadata"]["name"], "progress": progress(0, total)},
        )

    async def _result(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, str]:
        pods = await self.api.list("Pod", namespace, {"job-name": job_name(name)})
        message = termination_message(pods)
        return parse_result(message), (message or "")[-1024:]

    async def _finish(
        self, body: dict[str, Any], spec: FluxLoRATrainingSpec, state: str, total: int
    ) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        now, old = _now(), (body.get("status") or {}).get("conditions") or []
        result, raw = await self._result(namespace, name)
        status: dict[str, Any] = {"job": job_name(name)}
        if state == "failed" or result is None or result.get("status") != "succeeded":
            why = (result or {}).get("message") or raw or "the Job failed without a result"
            status.update(phase="Failed", message=f"training failed: {why}")
            status["conditions"] = [condition("Trained", False, "JobFailed", why, now, old)]
            await self._write(body, status)
            return
        reported = result.get("metrics") or {}
        verdict = evaluate(
            reported.get("base_validation_loss"),
            reported.get("final_validation_loss"),
            spec.evaluation.min_improvement_percent,
        )
        uri, sha = adapter_uri(spec, result), str(result.get("sha256") or "")
        steps = int(reported.get("steps") or total)
        status.update(
            progress=progress(steps, total) | {"etaSeconds": None},  # None: the ETA goes
            metrics=status_metrics(result, verdict),
            adapter={
                "uri": uri,
                "sha256": sha,
                "datasetSha256": result.get("dataset_sha256"),
                "trainerVersion": result.get("trainer_version"),
            },
        )
        conditions = [
            condition("Trained", True, "JobSucceeded", f"adapter sha256 {sha}", now, old),
            condition(
                "Evaluated",
                verdict.passed,
                "Passed" if verdict.passed else "BelowThreshold",
                verdict.message,
                now,
                old,
            ),
        ]
        if not verdict.passed:
            status.update(phase="Failed", conditions=conditions, message=verdict.message)
            await self._write(body, status)  # the FluxDeployment is never touched
            return
        if spec.promotion == "canary" and spec.target:
            entry = lora_entry(spec, name, uri, sha)
            if not await self._promote(namespace, spec.target, entry):
                why = f"evaluation passed, but FluxDeployment {spec.target} was not found"
                status.update(phase="Failed", conditions=conditions, message=why)
                await self._write(body, status)
                return
            status["promotion"] = {"target": spec.target, "loraName": entry["name"], "time": now}
            conditions.append(
                condition("Promoted", True, "AddedToTarget", f"loras of {spec.target}", now, old)
            )
        status.update(phase="Succeeded", conditions=conditions, message=verdict.message)
        await self._write(body, status)

    async def _promote(self, namespace: str, target: str, entry: dict[str, Any]) -> bool:
        """Add the adapter to the target's ``spec.loras`` (the user asked for it in the
        training's ``promotion``); optimistic: a concurrent edit makes this a 409, and the
        next event tries again on the new version."""
        deployment = await self.api.get("FluxDeployment", namespace, target)
        if deployment is None:
            return False
        loras = promoted_loras((deployment.get("spec") or {}).get("loras") or [], entry)
        if loras is None:
            return True
        patch = {
            "metadata": {"resourceVersion": deployment["metadata"].get("resourceVersion")},
            "spec": {"loras": loras},
        }
        await self.api.merge_patch("FluxDeployment", namespace, target, patch)
        logger.info(
            "adapter promoted",
            extra={
                "object": f"{namespace}/{target}",
                "lora": entry["name"],
                "sha256": entry["sha256"],
            },
        )
        return True

"""FluxLoRATraining decisions, pure: how the Job is doing, what the trainer reported in
its Pod's termination message, whether the adapter passes evaluation, the status to
write and the LoRA entry a promotion adds to the target FluxDeployment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from flux_operator.render.training import ADAPTER_FILE
from flux_operator.spec.training import FluxLoRATrainingSpec

JobState = Literal["running", "succeeded", "failed"]


def job_state(job: dict[str, Any]) -> JobState:
    """A Job's (or TrainJob's) end, from its conditions."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


def termination_message(pods: list[dict[str, Any]]) -> str | None:
    """The newest Pod's termination message (the trainer's result, or with
    FallbackToLogsOnError the log's tail when it crashed before writing one)."""
    newest = sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "")
    for pod in reversed(newest):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"])
    return None


def running_pod(pods: list[dict[str, Any]]) -> str | None:
    """The name of the Job's newest running Pod (the trainer whose log says how far it
    is), or None."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    running.sort(key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "")
    return str(running[-1]["metadata"]["name"]) if running else None


def progress(step: int, total: int, eta_seconds: float | None = None) -> dict[str, Any]:
    """``status.progress``: steps done of ``total``, and the time left while it runs."""
    value: dict[str, Any] = {"step": step, "total": total, "summary": f"{step}/{total}"}
    if eta_seconds is not None:
        eta = round(eta_seconds)
        hours, minutes, seconds = eta // 3600, eta // 60 % 60, eta % 60
        left = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
        value.update(etaSeconds=eta, summary=f"{step}/{total} (ETA {left})")
    return value


def progress_from_log(text: str, total: int) -> dict[str, Any] | None:
    """The progress in the newest step line of the trainer's log tail (one JSON object a
    line; ``flux_trainer.report.Progress`` writes ``"event": "step"`` with ``step``,
    ``steps`` and ``eta_s``), or None when the tail holds none (validation or samples
    logging in between, a log that is not the trainer's)."""
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != "step":
            continue
        step, eta = record.get("step"), record.get("eta_s")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            continue
        known = isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta < 1e9
        return progress(min(step, total), total, float(eta) if known else None)  # type: ignore[arg-type]
    return None


def message_object(message: str | None, key: str) -> dict[str, Any] | None:
    """A termination message that is a JSON object with ``key``, or None when it is not
    one (a log's tail, left by FallbackToLogsOnError after a crash)."""
    if not message:
        return None
    try:
        value = json.loads(message.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) and key in value else None


def parse_result(message: str | None) -> dict[str, Any] | None:
    """The trainer's result object (flux_trainer.report), or None when the message is
    not one (a log tail)."""
    return message_object(message, "status")


@dataclass(frozen=True)
class Evaluation:
    passed: bool
    improvement_percent: float | None
    message: str


def evaluate(base: float | None, final: float | None, min_improvement_percent: float) -> Evaluation:
    """Passes when ``final < base * (1 - X/100)``: the adapter must beat the base model on
    the held-out split by at least X percent (strictly, so X = 0 means any improvement)."""
    if base is None or final is None or base <= 0:
        return Evaluation(False, None, "the trainer reported no validation losses")
    improvement = (base - final) / base * 100
    bound = base * (1 - min_improvement_percent / 100)
    said = (
        f"final validation loss {final:.6g} vs base {base:.6g} "
        f"({improvement:.2f}% better; at least {min_improvement_percent:g}% needed)"
    )
    return Evaluation(final < bound, round(improvement, 4), said)


def adapter_uri(spec: FluxLoRATrainingSpec, result: dict[str, Any]) -> str:
    """Where the adapter is: the uploaded URI, or the file on the output PVC."""
    if result.get("adapter_uri"):
        return str(result["adapter_uri"])
    pvc = spec.output.pvc
    if pvc is None:
        return str(result.get("adapter") or "")
    return f"pvc://{pvc.claim_name}/{pvc.path}/{ADAPTER_FILE}"


def lora_entry(spec: FluxLoRATrainingSpec, name: str, uri: str, sha256: str) -> dict[str, Any]:
    """The adapter as an item of a FluxDeployment's ``spec.loras``."""
    entry: dict[str, Any] = {"name": spec.lora_name or name, "sha256": sha256}
    if spec.output.pvc is not None:
        entry["pvc"] = {"claimName": spec.output.pvc.claim_name, "subPath": spec.output.pvc.path}
    else:
        entry["uri"] = uri
    return entry


def promoted_loras(
    loras: list[dict[str, Any]], entry: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The target's loras with ``entry`` in (replacing one of the same name), or None
    when it is there already (nothing to write)."""
    if entry in loras:
        return None
    return [lora for lora in loras if lora.get("name") != entry["name"]] + [entry]


def condition(
    type_: str, ok: bool, reason: str, message: str, now: str, old: list[dict[str, Any]]
) -> dict[str, Any]:
    """A condition, keeping its transition time while its status stays."""
    status = "True" if ok else "False"
    before = next((c for c in old if c.get("type") == type_), None)
    since = before["lastTransitionTime"] if before and before.get("status") == status else now
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


_METRICS = (
    "base_validation_loss",
    "final_validation_loss",
    "steps",
    "seconds",
    "peak_memory_gb",
)


def status_metrics(result: dict[str, Any], evaluation: Evaluation) -> dict[str, Any]:
    reported = result.get("metrics") or {}
    camel = {
        "base_validation_loss": "baseValidationLoss",
        "final_validation_loss": "finalValidationLoss",
        "peak_memory_gb": "peakMemoryGb",
    }
    metrics = {camel.get(k, k): reported[k] for k in _METRICS if reported.get(k) is not None}
    if evaluation.improvement_percent is not None:
        metrics["improvementPercent"] = evaluation.improvement_percent
    return metrics


def same_status(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal but for transition times (a write would only echo back as an event)."""

    def plain(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return {**{k: v for k, v in status.items() if k in new}, "conditions": conditions}

    return plain(old) == plain(new)

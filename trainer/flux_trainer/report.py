"""How a run reports itself: JSON log lines (one per step, with loss, speed and ETA),
``metrics.json`` at the end, and the result: one compact JSON object, printed and
written to ``--result-file`` (by default Kubernetes' ``/dev/termination-log``, which
the kubelet copies into the Pod's status for whoever runs the Job).

The result's shape (the contract a caller reads):

    {"status": "succeeded", "adapter": PATH, "adapter_uri": URI or null,
     "sha256": HEX, "dataset_sha256": HEX, "trainer_version": STR,
     "metrics": {"base_validation_loss": F, "final_validation_loss": F,
                 "steps": N, "seconds": F, "peak_memory_gb": F}}
    {"status": "failed", "error": KIND, "message": STR, "exit_code": N}

KIND is config, dataset, dependency, resume or error. The object stays under the
kubelet's 4,096-byte limit on a termination message (a long message is cut).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("flux_trainer")

TERMINATION_LOG = Path("/dev/termination-log")
RESULT_LIMIT = 4096
_RECORD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    """Every record to stderr as one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def quiet_hub_libraries() -> None:
    """diffusers' and transformers' records through ours, their progress bars off
    (called once they are imported: importing them here would import torch)."""
    for name in ("diffusers", "transformers"):
        module = __import__(f"{name}.utils.logging", fromlist=["logging"])
        module.disable_default_handler()
        module.enable_propagation()
        module.disable_progress_bar()
        module.set_verbosity_warning()


class Progress:
    """Steps per second and the time left, over the steps of this process (a resumed
    run does not count the steps it skipped)."""

    def __init__(self, first_step: int, total: int) -> None:
        self.first, self.total = first_step, total
        self.started = time.monotonic()

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        """Log step ``step`` (1-based, just finished)."""
        done = step - self.first
        elapsed = time.monotonic() - self.started
        per_step = elapsed / done if done else 0.0
        log.info(
            "step",
            extra={
                "event": "step",
                "step": step,
                "steps": self.total,
                "loss": round(loss, 6),
                "lr": learning_rate,
                "s_per_step": round(per_step, 4),
                "eta_s": round(per_step * (self.total - step), 1),
            },
        )


def write_metrics(output: Path, metrics: dict[str, Any]) -> Path:
    path = output / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def failure(kind: str, message: str, exit_code: int) -> dict[str, Any]:
    return {"status": "failed", "error": kind, "message": message, "exit_code": exit_code}


def encode_result(result: dict[str, Any]) -> str:
    """Compact JSON within the termination message's limit (a failure's message is cut)."""
    text = json.dumps(result, separators=(",", ":"))
    while len(text.encode()) > RESULT_LIMIT and len(result.get("message") or "") > 3:
        excess = len(text.encode()) - RESULT_LIMIT
        result = {**result, "message": result["message"][: -(excess + 3)] + "..."}
        text = json.dumps(result, separators=(",", ":"))
    return text


def default_result_file() -> Path | None:
    """Kubernetes' termination log when the container has one."""
    return TERMINATION_LOG if TERMINATION_LOG.exists() else None


def emit_result(result: dict[str, Any], path: Path | None) -> None:
    text = encode_result(result)
    print(text, flush=True)
    if path is not None:
        try:
            path.write_text(text)
        except OSError as exc:
            log.error("result file not written", extra={"path": str(path), "error": str(exc)})

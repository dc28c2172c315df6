"""Structured logging in the Elastic Common Schema (ECS), through Elastic's ``ecs-logging``.

Every line is one ECS document (``--log-format json``, the default): ``@timestamp``,
``log.level``, ``message``, ``ecs.version``, ``service.name``/``service.version``,
``event.dataset``, and what the call passed as ``extra`` under its ECS name. The names
a log call uses stay short (``request_id``, ``user``, ``steps``); :data:`FIELDS` says
where each goes: the request id becomes ``trace.id`` (and ``span.id``), the user
``user.id``, the generation's own fields go under ``fluxserve.*``. A key the table does
not know lands in ``fluxserve.detail`` (a ``flattened`` field in the index template), so
no log call can add an unmapped field. ``--log-format plain`` is text for a terminal.

``deploy/elk/index-template.json`` maps every name here; a test checks the lines the
server writes against it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import ecs_logging

SERVICE_NAME = "fluxserve-server"
DATASET = "fluxserve.server"

LogFormat = Literal["json", "plain"]

#: Each ``extra`` key the server's log calls use: its ECS name and its type in the index
#: template. Keys not here go to ``fluxserve.detail.<key>``.
FIELDS: dict[str, tuple[str, str]] = {
    "user": ("user.id", "keyword"),
    "reason": ("event.reason", "keyword"),
    "action": ("event.action", "keyword"),
    "outcome": ("event.outcome", "keyword"),
    "endpoint": ("fluxserve.endpoint", "keyword"),
    "preset": ("fluxserve.preset", "keyword"),
    "experiment": ("fluxserve.experiment", "keyword"),
    "arm": ("fluxserve.arm", "keyword"),
    "release": ("fluxserve.release", "keyword"),
    "model": ("fluxserve.model", "keyword"),
    "job_id": ("fluxserve.job_id", "keyword"),
    "kind": ("fluxserve.kind", "keyword"),
    "status": ("fluxserve.status", "keyword"),  # a job's status, or an HTTP status
    "request_ids": ("fluxserve.request_ids", "keyword"),
    "steps": ("fluxserve.steps", "long"),
    "images": ("fluxserve.images", "long"),
    "batch_size": ("fluxserve.batch_size", "long"),
    "queue_position": ("fluxserve.queue_position", "long"),
    "step": ("fluxserve.step", "long"),
    "queue_ms": ("fluxserve.queue_ms", "float"),
    "total_ms": ("fluxserve.latency_ms", "float"),
    "latency_ms": ("fluxserve.latency_ms", "float"),
    "cache_hit": ("fluxserve.cache_hit", "boolean"),
}

#: The names :func:`ecs_fields` derives rather than copies, with their types.
DERIVED: dict[str, str] = {
    "trace.id": "keyword",
    "span.id": "keyword",
    "error.message": "match_only_text",
    "event.duration": "long",
    "fluxserve.size": "keyword",
    "fluxserve.width": "long",
    "fluxserve.height": "long",
    "fluxserve.error": "match_only_text",
    "fluxserve.detail": "flattened",
}

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_STANDARD = _RECORD | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


def span_id(request_id: str) -> str:
    """The span of a request's handling on this server: 16 hex digits (W3C's span-id
    length) of the request id's SHA-256, so its log and audit lines share one."""
    return hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:16]


def ecs_fields(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted ECS names and values for a log call's ``extra`` (None values dropped)."""
    out: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for key, value in extra.items():
        if value is None:
            continue
        if key == "request_id":
            out["trace.id"] = str(value)
            out["span.id"] = span_id(str(value))
        elif key == "size" and isinstance(value, (list, tuple)) and len(value) == 2:
            width, height = value
            out["fluxserve.size"] = f"{width}x{height}"
            out["fluxserve.width"], out["fluxserve.height"] = int(width), int(height)
        elif key == "error":
            out["error.message"] = str(value)
        elif key in FIELDS:
            out[FIELDS[key][0]] = value
            if key in ("total_ms", "latency_ms"):
                out["event.duration"] = int(float(value) * 1_000_000)  # ECS: nanoseconds
        else:
            detail[key] = value
    if detail:
        out["fluxserve.detail"] = detail
    return out


class EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter, with the server's ``extra`` keys under their ECS names
    and the fields every line of the process carries (service, release, dataset)."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        # log.original repeats message; the library writes it by default.
        super().__init__(exclude_fields=("log.original",), ensure_ascii=False)
        self.static = dict(static or {})

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        extra = {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }
        fields = {**self.static, **ecs_fields(extra)}
        if record.exc_info and "error.message" in fields:
            # ecs-logging writes error.* from the exception; keep the call's text apart.
            fields["fluxserve.error"] = fields.pop("error.message")
        clean = logging.makeLogRecord({k: v for k, v in vars(record).items() if k in _RECORD})
        clean.__dict__.update(fields)
        try:
            result: dict[str, Any] = super().format_to_ecs(clean)
        except (TypeError, ValueError):
            # Keys that collide once de-dotted ("a" and "a.b"): keep the line, with the
            # call's fields as text, rather than lose it to logging's error handler.
            clean = logging.makeLogRecord({k: v for k, v in vars(record).items() if k in _RECORD})
            clean.__dict__.update(self.static)
            clean.__dict__["fluxserve.detail"] = {"unmapped": repr(extra)}
            result = super().format_to_ecs(clean)
        return result


class PlainFormatter(logging.Formatter):
    """One readable line for a terminal: time, level, logger, message, then the call's
    ``extra`` as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extra = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_") and v is not None
        ]
        if extra:
            line += "  " + " ".join(extra)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def process_fields(service: str, dataset: str, release: str | None) -> dict[str, Any]:
    """What every line of one process carries."""
    fields: dict[str, Any] = {"service.name": service, "event.dataset": dataset}
    if release:
        fields["service.version"] = release
        fields["fluxserve.release"] = release
    return fields


def formatter(log_format: LogFormat, release: str | None) -> logging.Formatter:
    if log_format == "plain":
        return PlainFormatter()
    return EcsFormatter(process_fields(SERVICE_NAME, DATASET, release))


def configure(
    level: str = "info",
    release: str | None = None,
    log_format: LogFormat = "json",
    hub_libraries: bool = True,
) -> None:
    """Send every logger's records to stderr, one ECS document a line or plain text
    (called once, from main). ``hub_libraries`` False: leave diffusers and transformers
    unimported (a queue front runs no model, and importing them imports torch)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, release))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn and grpc bring their own handlers; route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # warnings.warn prints text to stderr; as records they are lines like the others.
    logging.captureWarnings(True)
    if hub_libraries:
        _quiet_hub_libraries()


def _quiet_hub_libraries() -> None:
    """diffusers and transformers print with their own handlers and draw progress bars
    while loading; send their records through ours and drop the bars (not JSON)."""
    for name in ("diffusers", "transformers"):
        try:
            module = __import__(f"{name}.utils.logging", fromlist=["logging"])
        except ImportError:  # the SDK-only install has neither
            continue
        module.disable_default_handler()
        module.enable_propagation()
        module.disable_progress_bar()


def route_torch_logs() -> None:
    """torch puts its own stderr handlers (glog-style text, not JSON) on its loggers when
    it is imported, and libraries that register types with it at import (torchao through
    diffusers) log through them. Import it here and send those records through ours."""
    import torch  # noqa: F401  (its import installs the handlers this removes)

    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "torch" and isinstance(logger, logging.Logger):
            logger.handlers[:] = []
            logger.propagate = True

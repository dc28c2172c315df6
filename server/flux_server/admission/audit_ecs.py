"""An audit line as an Elastic Common Schema document, and back.

The audit log keeps what it always kept (see :class:`~flux_server.admission.audit.AuditRecord`);
each field has an ECS name or one under ``fluxserve.audit.*``:

======================  ==================================================
``time``                ``@timestamp`` (milliseconds)
``request_id``          ``trace.id`` (and ``span.id``, as in the server log)
``user``                ``user.id``
``endpoint``            ``fluxserve.endpoint``
``decision``            ``fluxserve.audit.decision``, and ``event.action``
``outcome``             ``fluxserve.audit.outcome`` (``accepted``: the work starts;
                        ``failed``: an admitted request's final line)
``reason``              ``event.reason``
``detail``              ``fluxserve.audit.detail``
``status``              ``http.response.status_code``
``latency_ms``          ``fluxserve.latency_ms`` (and ``event.duration``, ns)
``cache_hit``           ``fluxserve.cache_hit``
``job_id``              ``fluxserve.job_id``
``experiment``          ``fluxserve.experiment``, ``fluxserve.arm``, ``fluxserve.audit.subject``
``prompt`` ...          ``fluxserve.audit.prompt``, ``.negative_prompt``, ``.prompt_sha256``,
                        ``.negative_prompt_sha256``
``params``              ``fluxserve.audit.params`` (as given), with the preset, steps,
                        size and image count also typed under ``fluxserve.*``
``kind``                ``fluxserve.audit.kind`` (``audit`` or ``audit_gap``)
``client``              ``client.address`` (an IPv6 address by its /64: not an ``ip``)
``count``               ``fluxserve.audit.count`` (a failed-authentication summary)
======================  ==================================================

:func:`parse_line` reads a line back into the record's own field names.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Protocol

import ecs_logging

from flux_server.logs import SERVICE_NAME, ecs_fields, process_fields


class AuditRecord(Protocol):
    """What this module reads of :class:`flux_server.admission.audit.AuditRecord` (that
    module writes with this one: it is not imported back)."""

    @property
    def kind(self) -> str: ...  # read-only here: the record's are Literal types
    @property
    def decision(self) -> str: ...

    time: datetime
    request_id: str
    user: str | None
    endpoint: str | None
    prompt: str | None
    negative_prompt: str | None
    prompt_sha256: str | None
    negative_prompt_sha256: str | None
    params: dict[str, Any]
    reason: str | None
    detail: str | None
    status: int | None

    @property
    def outcome(self) -> str | None: ...

    latency_ms: float | None
    cache_hit: bool
    job_id: str | None
    experiment: dict[str, str] | None
    client: str | None
    count: int | None


DATASET = "fluxserve.audit"
LOGGER = "flux_server.audit"

#: The audit-only names (beyond :data:`flux_server.logs.FIELDS`) and their types.
AUDIT_FIELDS: dict[str, str] = {
    "fluxserve.audit.kind": "keyword",
    "fluxserve.audit.decision": "keyword",
    "fluxserve.audit.outcome": "keyword",
    "fluxserve.audit.detail": "keyword",
    "fluxserve.audit.prompt": "text",
    "fluxserve.audit.negative_prompt": "text",
    "fluxserve.audit.prompt_sha256": "keyword",
    "fluxserve.audit.negative_prompt_sha256": "keyword",
    "fluxserve.audit.params": "flattened",
    "fluxserve.audit.subject": "keyword",
    "fluxserve.audit.failed_writes": "long",
    "fluxserve.audit.count": "long",
    "client.address": "keyword",
    "http.response.status_code": "long",
    "event.start": "date",
    "event.kind": "keyword",
}

_PARAMS = "fluxserve.audit.params"


class _AuditFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter, with the request's parameters kept exactly as given:
    through ``extra`` the library would drop their empty objects and null values."""

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        params = record.__dict__.pop(_PARAMS, None)  # our own record: see _render
        result: dict[str, Any] = super().format_to_ecs(record)
        if params is not None:
            result.setdefault("fluxserve", {}).setdefault("audit", {})["params"] = params
        return result


_FORMATTER = _AuditFormatter(
    # Where in the code and which thread wrote the line says nothing about the request.
    exclude_fields=("log.original", "log.origin", "process"),
    ensure_ascii=False,
)


def _level(record: AuditRecord) -> int:
    if record.decision != "rejected":
        return logging.INFO
    return logging.WARNING if record.status is not None and record.status < 500 else logging.ERROR


def _message(record: AuditRecord) -> str:
    what = f"job {record.job_id}" if record.job_id else (record.endpoint or "request")
    return f"{what} {record.decision}" + (f" ({record.reason})" if record.reason else "")


def _typed_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters an analyst groups by, as the server log names them."""
    typed: dict[str, Any] = {
        "preset": params.get("style_preset"),
        "steps": params.get("steps"),
        "images": params.get("num_images"),
    }
    if isinstance(params.get("width"), int) and isinstance(params.get("height"), int):
        typed["size"] = (params["width"], params["height"])
    return typed


def audit_fields(record: AuditRecord, release: str | None) -> dict[str, Any]:
    """The dotted ECS names and values of one audit line (no timestamp, level, message)."""
    experiment = record.experiment or {}
    fields = {
        **process_fields(SERVICE_NAME, DATASET, release),
        **ecs_fields(
            {
                "request_id": record.request_id,
                "user": record.user,
                "endpoint": record.endpoint,
                "action": record.decision,
                "outcome": "failure" if record.decision == "rejected" else "success",
                "reason": record.reason,
                "latency_ms": record.latency_ms,
                "cache_hit": record.cache_hit,
                "job_id": record.job_id,
                "experiment": experiment.get("name"),
                "arm": experiment.get("arm"),
                **_typed_params(record.params),
            }
        ),
        "event.kind": "event",
        "fluxserve.audit.kind": record.kind,
        "fluxserve.audit.decision": record.decision,
        "fluxserve.audit.outcome": record.outcome,
        "fluxserve.audit.detail": record.detail,
        "fluxserve.audit.subject": experiment.get("subject"),
        "fluxserve.audit.prompt": record.prompt,
        "fluxserve.audit.negative_prompt": record.negative_prompt,
        "fluxserve.audit.prompt_sha256": record.prompt_sha256,
        "fluxserve.audit.negative_prompt_sha256": record.negative_prompt_sha256,
        _PARAMS: record.params or None,
        "http.response.status_code": record.status,
        "client.address": record.client,
        "fluxserve.audit.count": record.count,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _millis(when: datetime) -> str:
    """``when`` as ``@timestamp`` is written (UTC, milliseconds): the two compare."""
    utc = when.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _render(when: datetime, level: int, message: str, fields: dict[str, Any]) -> str:
    """One line through ecs-logging's formatter, stamped ``when`` rather than now."""
    entry = logging.LogRecord(LOGGER, level, "", 0, message, None, None)
    entry.created = when.timestamp()
    entry.msecs = when.microsecond // 1000
    entry.__dict__.update(fields)
    return _FORMATTER.format(entry)


def audit_line(record: AuditRecord, release: str | None = None) -> str:
    """The ECS line (without newline) for ``record``."""
    return _render(record.time, _level(record), _message(record), audit_fields(record, release))


def gap_line(now: datetime, since: datetime | None, failed_writes: int, release: str | None) -> str:
    """The line that says audit lines were refused (their requests too) from ``since``."""
    fields: dict[str, Any] = {
        **process_fields(SERVICE_NAME, DATASET, release),
        "event.kind": "event",
        "event.action": "audit_gap",
        "event.outcome": "failure",
        "fluxserve.audit.kind": "audit_gap",
        "fluxserve.audit.failed_writes": failed_writes,
    }
    if since is not None:
        fields["event.start"] = _millis(since)
    message = f"audit lines were refused since {_millis(since) if since else 'unknown'}"
    return _render(now, logging.WARNING, f"{message} ({failed_writes} failed writes)", fields)


def _get(doc: dict[str, Any], dotted: str) -> Any:
    """A field of a document whatever its nesting ("a.b" as a key, or a → b)."""
    if dotted in doc:
        return doc[dotted]
    head, _, rest = dotted.partition(".")
    inner = doc.get(head)
    return _get(inner, rest) if rest and isinstance(inner, dict) else None


def parse_line(line: str) -> dict[str, Any]:
    """An audit line read back under the record's own field names (``request_id``,
    ``decision``, ...; absent ones left out), for an ``audit`` or an ``audit_gap`` line."""
    doc = json.loads(line)
    audit = _get(doc, "fluxserve.audit") or {}
    kind = audit.get("kind")
    if kind == "audit_gap":
        return {
            "kind": kind,
            "time": doc["@timestamp"],
            "since": _get(doc, "event.start"),
            "failed_writes": audit.get("failed_writes"),
        }
    if kind != "audit":
        raise ValueError(f"not an audit line: {line[:200]!r}")
    experiment = {
        "name": _get(doc, "fluxserve.experiment"),
        "arm": _get(doc, "fluxserve.arm"),
        "subject": audit.get("subject"),
    }
    record = {
        "kind": kind,
        "time": doc["@timestamp"],
        "request_id": _get(doc, "trace.id"),
        "user": _get(doc, "user.id"),
        "endpoint": _get(doc, "fluxserve.endpoint"),
        "prompt": audit.get("prompt"),
        "negative_prompt": audit.get("negative_prompt"),
        "prompt_sha256": audit.get("prompt_sha256"),
        "negative_prompt_sha256": audit.get("negative_prompt_sha256"),
        "params": audit.get("params") or {},
        "decision": audit.get("decision"),
        "outcome": audit.get("outcome"),
        "reason": _get(doc, "event.reason"),
        "detail": audit.get("detail"),
        "status": _get(doc, "http.response.status_code"),
        "latency_ms": _get(doc, "fluxserve.latency_ms"),
        "cache_hit": bool(_get(doc, "fluxserve.cache_hit")),
        "job_id": _get(doc, "fluxserve.job_id"),
        "experiment": experiment if experiment["name"] is not None else None,
        "client": _get(doc, "client.address"),
        "count": audit.get("count"),
    }
    return {k: v for k, v in record.items() if v is not None}

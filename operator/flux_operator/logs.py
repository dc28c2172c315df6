"""The operator's logs in the Elastic Common Schema, through Elastic's ``ecs-logging``.

``--log-format json`` (the default) writes one ECS document a line, the server's shape
(``deploy/elk/index-template.json`` maps both): the FluxDeployment a line is about goes
to ``orchestrator.namespace`` and ``orchestrator.resource.name`` (kopf's own object
reference too), a reconciliation's Kubernetes event to ``event.action`` (its reason)
and ``event.outcome``, the release to ``fluxserve.release``; any other ``extra`` key to
``fluxserve.detail``. ``--log-format plain`` is kopf's text format, for a terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import ecs_logging

SERVICE_NAME = "fluxserve-operator"
DATASET = "fluxserve.operator"

#: Each ``extra`` key the operator's log calls use: its ECS name and its type in the
#: index template. Keys not here go to ``fluxserve.detail.<key>``.
FIELDS: dict[str, tuple[str, str]] = {
    "reason": ("event.reason", "keyword"),
    "action": ("event.action", "keyword"),
    "outcome": ("event.outcome", "keyword"),
    "release": ("fluxserve.release", "keyword"),
    "error": ("error.message", "match_only_text"),
    "method": ("http.request.method", "keyword"),
    "path": ("url.path", "wildcard"),
    "attempt": ("fluxserve.attempt", "long"),
}

#: The names :func:`ecs_fields` derives rather than copies, with their types.
DERIVED: dict[str, str] = {
    "orchestrator.type": "keyword",
    "orchestrator.namespace": "keyword",
    "orchestrator.resource.name": "keyword",
    "orchestrator.resource.type": "keyword",
    "orchestrator.api_version": "keyword",
    "orchestrator.resource.id": "keyword",
    "fluxserve.error": "match_only_text",
    "fluxserve.detail": "flattened",
}

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
# kopf's own extras: its settings object and its event-posting flag say nothing to a
# reader (its object reference, k8s_ref, is mapped below).
_DROPPED = {"message", "asctime", "settings", "k8s_skip"}


def _object(value: str) -> dict[str, Any]:
    """``namespace/name`` (or a bare name) as the orchestrator fields."""
    namespace, _, name = value.rpartition("/")
    fields: dict[str, Any] = {
        "orchestrator.type": "kubernetes",
        "orchestrator.resource.type": "fluxdeployment",
        "orchestrator.resource.name": name,
    }
    if namespace:
        fields["orchestrator.namespace"] = namespace
    return fields


def _kopf_ref(ref: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's object reference (apiVersion, kind, name, namespace, uid)."""
    fields: dict[str, Any] = {"orchestrator.type": "kubernetes"}
    for key, name in (
        ("name", "orchestrator.resource.name"),
        ("namespace", "orchestrator.namespace"),
        ("apiVersion", "orchestrator.api_version"),
        ("uid", "orchestrator.resource.id"),
    ):
        if ref.get(key):
            fields[name] = ref[key]
    if ref.get("kind"):
        fields["orchestrator.resource.type"] = str(ref["kind"]).lower()
    return fields


def ecs_fields(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted ECS names and values for a log call's ``extra`` (None values dropped)."""
    out: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for key, value in extra.items():
        if value is None or key in _DROPPED:
            continue
        if key == "object":
            out.update(_object(str(value)))
        elif key == "k8s_ref" and isinstance(value, Mapping):
            out.update(_kopf_ref(value))
        elif key in FIELDS:
            out[FIELDS[key][0]] = value if key != "error" else str(value)
        else:
            detail[key] = value
    if detail:
        out["fluxserve.detail"] = detail
    return out


class EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter, with the operator's and kopf's ``extra`` keys under their
    ECS names, and the service and dataset on every line."""

    def __init__(self) -> None:
        super().__init__(exclude_fields=("log.original",), ensure_ascii=False)
        self.static = {"service.name": SERVICE_NAME, "event.dataset": DATASET}

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        extra = {k: v for k, v in vars(record).items() if k not in _RECORD}
        fields = {**self.static, **ecs_fields(extra)}
        if record.exc_info and "error.message" in fields:
            # ecs-logging writes error.* from the exception; keep the call's text apart.
            fields["fluxserve.error"] = fields.pop("error.message")
        clean = logging.makeLogRecord({k: v for k, v in vars(record).items() if k in _RECORD})
        clean.__dict__.update(fields)
        result: dict[str, Any] = super().format_to_ecs(clean)
        return result


def configure(log_format: Literal["json", "plain"], verbose: bool) -> None:
    """kopf's logging set-up (levels, its handler), then ECS lines on that handler for
    ``json``. Called once, before the operator starts."""
    import kopf

    root = logging.getLogger()
    before = set(root.handlers)
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    if log_format == "json":
        for handler in root.handlers:
            if handler not in before:  # kopf's own: others (a test's capture) keep theirs
                handler.setFormatter(EcsFormatter())
        # warnings.warn prints text to stderr; as records they are lines like the others.
        logging.captureWarnings(True)


def event_outcome(event_type: str) -> Literal["success", "failure"]:
    """A Kubernetes event's type as an ECS outcome: a Warning is something that failed."""
    return "failure" if event_type == "Warning" else "success"

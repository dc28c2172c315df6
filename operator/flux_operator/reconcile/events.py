"""Events: what a reconciliation announces, and the core/v1 Event that carries it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from flux_operator.render import MANAGER
from flux_operator.spec import GROUP, VERSION

EventType = Literal["Normal", "Warning"]

EVENT_MESSAGE_LIMIT = 1024
"""The API server refuses longer event messages."""


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


def render_event(body: dict[str, Any], event: Event, now: str, suffix: str) -> dict[str, Any]:
    """A core/v1 Event about the FluxDeployment ``body`` (named as kubectl would show it:
    ``<name>.<suffix>``)."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    message = event.message
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FluxDeployment",
            "name": meta["name"],
            "namespace": namespace,
            **({"uid": meta["uid"]} if meta.get("uid") else {}),
            **({"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") else {}),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": MANAGER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }

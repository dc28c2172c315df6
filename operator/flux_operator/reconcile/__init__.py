"""Decide, without I/O, what one reconciliation does: ``plan()`` and what it returns.

``plan`` (the entry point) · ``rollout`` (its steps) · ``history`` · ``conditions`` ·
``observed`` (the Deployment reduced to what decisions need) · ``children`` (ownership,
drift, stale ConfigMaps) · ``events``.
"""

from flux_operator.reconcile.children import Children
from flux_operator.reconcile.conditions import degraded_status
from flux_operator.reconcile.events import Event, EventType, render_event
from flux_operator.reconcile.observed import Observed
from flux_operator.reconcile.plan import Plan, Snapshot, owner_of, parse_status, plan, plan_rollout

__all__ = [
    "Children",
    "Event",
    "EventType",
    "Observed",
    "Plan",
    "Snapshot",
    "degraded_status",
    "owner_of",
    "parse_status",
    "plan",
    "plan_rollout",
    "render_event",
]

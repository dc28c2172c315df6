"""The queue's decisions as pure functions (no Redis, no clock): which entries run
together, whose turn it is, and what a waiting client is told.

Fair share: each API key has its own stream within a class, and a worker reads the
keys least recently served first, one entry per key per turn. So one key's 1,000
entries take every other turn at most while another key has one waiting; a single
stream per class could not do this, because a consumer group hands entries out in
stream order and an entry read cannot be put back for later.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """An entry a worker has read: its stream, id, batch key and images."""

    stream: str
    entry_id: str
    batch_key: tuple[Any, ...]
    units: int
    payload: Mapping[str, Any]


def batch_key(payload: Mapping[str, Any]) -> tuple[Any, ...]:
    """Entries with equal keys can share one pipeline call: same kind, size, steps,
    guidance and adapters (the engine's own key, rebuilt from the wire form), and same
    lane: a priority entry runs with priority entries only, as in the in-process
    batcher's lane (normal company would make its call bigger, so slower)."""
    if payload.get("kind", "generate") != "generate":
        # An edit or a question runs alone: its batch key would need its decoded image.
        return (payload["kind"], payload["request_id"])
    job = payload["job"]
    adapters = tuple(tuple(pair) for pair in job.get("adapters", ()))
    return (
        payload.get("kind", "generate"),
        is_priority(payload),
        job["width"],
        job["height"],
        job["steps"],
        float(job["guidance_scale"]),
        float(job.get("true_cfg_scale", 1.0)),
        adapters,
    )


def is_priority(payload: Mapping[str, Any]) -> bool:
    return bool(payload.get("priority", False))


def fair_order(last_served: Mapping[str, float]) -> list[str]:
    """API keys in the order they get their turn: least recently served first (ties by
    name, so every worker agrees)."""
    return sorted(last_served, key=lambda key: (last_served[key], key))


def take_compatible(
    candidates: Sequence[Candidate], free_units: int
) -> tuple[list[Candidate], list[Candidate]]:
    """The batch to run now and the entries left over (in order). Priority entries go
    first (an entry held over from an earlier read must not lead one that came later
    by the priority lane); the first candidate sets the batch key, later ones with the
    same key join while their images fit. The first always runs, even if it alone
    exceeds ``free_units``."""
    if not candidates:
        return [], []
    ordered = sorted(candidates, key=lambda c: not is_priority(c.payload))  # stable
    head = ordered[0]
    taken, rest, used = [head], [], head.units
    for candidate in ordered[1:]:
        if candidate.batch_key == head.batch_key and used + candidate.units <= free_units:
            taken.append(candidate)
            used += candidate.units
        else:
            rest.append(candidate)
    return taken, rest


def fair_position(ahead_in_own: int, other_waiting: Sequence[int], priority_waiting: int) -> int:
    """How many entries run before this one under round-robin between keys: those ahead
    of it in its own key's stream, at most as many plus one from every other key of
    its class (each gets one turn per turn of ours), and every entry of a class read
    first (priority). 0 means next."""
    turns = ahead_in_own + 1
    return ahead_in_own + sum(min(n, turns) for n in other_waiting) + priority_waiting


def eta_seconds(position: int, fleet_rate: float) -> float | None:
    """Seconds until this entry is done at the fleet's measured rate (requests per
    second, summed over live workers); None before any worker has measured one."""
    if fleet_rate <= 0 or not math.isfinite(fleet_rate):
        return None
    return round((position + 1) / fleet_rate, 2)


def updated_rate(previous: float, requests: int, seconds: float, weight: float = 0.3) -> float:
    """A worker's requests per second, smoothed over its batches."""
    if seconds <= 0:
        return previous
    sample = requests / seconds
    return sample if previous <= 0 else (1 - weight) * previous + weight * sample


CANARY_TRACK = "canary"


def release_track(stable: str, canary_weight: int | None, subject: str) -> str:
    """The track a front puts work on: the canary for ``canary_weight`` percent of the
    subjects (an API key, else a request id), ``stable`` for the others. A subject's
    draw is fixed (SHA-256 of it), so it stays on one side while the weight holds, and
    a raised weight only moves subjects to the canary, never back."""
    if not canary_weight:
        return stable
    draw = int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big") % 10_000
    return CANARY_TRACK if draw < canary_weight * 100 else stable

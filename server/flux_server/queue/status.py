"""What ``GET /queue`` and the depth gauges say: entries waiting by priority and release
track, the oldest one's wait, and the workers alive. One shape for the fleet (read from
the streams, so every front says the same) and for a process alone (its batcher)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from flux_server.queue import names
from flux_server.queue.broker import Broker


def snapshot(
    source: str,
    by_track: Mapping[str, Mapping[str, int]],
    oldest_enqueued: float | None,
    workers: Mapping[str, int],
    now: float,
) -> dict[str, Any]:
    """The body of ``GET /queue``. ``oldest_enqueued`` is an epoch time (None: nothing
    waits); ``workers`` counts the live workers per track."""
    waiting = {p: sum(track.get(p, 0) for track in by_track.values()) for p in names.PRIORITIES}
    return {
        "source": source,
        "waiting": waiting,
        "total": sum(waiting.values()),
        "tracks": {
            track: {p: counts.get(p, 0) for p in names.PRIORITIES}
            for track, counts in sorted(by_track.items())
        },
        "oldest_wait_s": None
        if oldest_enqueued is None
        else round(max(now - oldest_enqueued, 0.0), 3),
        "workers_alive": sum(workers.values()),
        "workers": dict(sorted(workers.items())),
    }


async def fleet_snapshot(broker: Broker) -> dict[str, Any]:
    """The fleet's queue as the streams hold it (raises ``RedisError`` when unreachable)."""
    by_track: dict[str, dict[str, int]] = {}
    oldest: float | None = None
    for track in await broker.tracks():
        counts = by_track.setdefault(track, {})
        for priority in names.PRIORITIES:
            state = await broker.class_state(track, priority)
            counts[priority] = sum(waiting for waiting, _ in state.values())
            for key_id, (waiting, last) in state.items():
                if not waiting:
                    continue
                stream = names.stream(track, priority, key_id)
                first = await broker.oldest_waiting(stream, last)
                if first is not None and (oldest is None or first < oldest):
                    oldest = first
    workers = _count_by_track(await broker.workers())
    return snapshot("fleet", by_track, oldest, workers, time.time())


def _count_by_track(heartbeats: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for beat in heartbeats:
        track = str(beat.get("track", ""))
        counts[track] = counts.get(track, 0) + 1
    return counts

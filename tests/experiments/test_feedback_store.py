"""Feedback finds the arm its request was served in, on this replica or through Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from features.redis_server import RedisServer

from flux_server.errors import InvalidRequest, Unavailable
from flux_server.experiments.feedback import (
    MAX_EVENTS_PER_EXPERIMENT,
    FeedbackStore,
    MemoryRecords,
    RequestNotFound,
    ServedRecord,
)


def served(request_id: str, arm: str = "impressionist", at: float | None = None) -> ServedRecord:
    return ServedRecord(
        request_id, "impressionist-filter", arm, "id:alice", time.time() if at is None else at
    )


async def test_memory_store_counts_each_event_once() -> None:
    store = FeedbackStore()
    await store.remember(served("r1"))
    first = await store.record("r1", "like")
    assert first.counted and first.record.arm == "impressionist"
    assert not (await store.record("r1", "like")).counted
    assert (await store.record("r1", "download", 0.5)).counted


async def test_unknown_request_is_not_found() -> None:
    store = FeedbackStore()
    with pytest.raises(RequestNotFound) as info:
        await store.record("nope", "like")
    assert info.value.code == "unknown_id" and info.value.field == "request_id"


@pytest.mark.parametrize(
    ("request_id", "event", "value", "field"),
    [
        ("", "like", 1, "request_id"),
        ("r" * 129, "like", 1, "request_id"),
        ("r1", "", 1, "event"),
        ("r1", "a b", 1, "event"),
        ("r1", "e" * 64, 1, "event"),
        ("r1", "like", 2, "value"),
        ("r1", "like", float("nan"), "value"),
    ],
)
async def test_bad_feedback_names_the_field(
    request_id: str, event: str, value: float, field: str
) -> None:
    store = FeedbackStore()
    await store.remember(served("r1"))
    with pytest.raises(InvalidRequest) as info:
        await store.record(request_id, event, value)
    assert info.value.field == field


async def test_event_names_are_bounded_per_experiment() -> None:
    store = FeedbackStore()
    await store.remember(served("r1"))
    for i in range(MAX_EVENTS_PER_EXPERIMENT):
        await store.record("r1", f"event-{i}")
    with pytest.raises(InvalidRequest, match="already has 20 event names"):
        await store.record("r1", "one-too-many")
    assert not (await store.record("r1", "event-0")).counted  # known names still work


def test_memory_records_are_bounded_in_count_and_age() -> None:
    records = MemoryRecords(max_records=2, ttl=60)
    for i in range(3):
        records.put(served(f"r{i}", at=1_000.0))
    assert records.get("r0", 1_001.0) is None  # the oldest went first
    assert records.get("r2", 1_001.0) is not None
    assert records.get("r2", 1_061.0) is None  # expired


async def test_feedback_reaches_the_arm_through_another_replica(
    redis_server: RedisServer,
) -> None:
    a, b = FeedbackStore(redis_server.url), FeedbackStore(redis_server.url)
    try:
        await a.remember(served("r1", arm="ink"))
        outcome = await b.record("r1", "like")
        assert outcome.counted and outcome.record.arm == "ink"
        assert not (await a.record("r1", "like")).counted  # once, whichever replica
        for i in range(MAX_EVENTS_PER_EXPERIMENT - 1):
            await (a if i % 2 else b).record("r1", f"event-{i}")
        with pytest.raises(InvalidRequest, match="event names"):
            await b.record("r1", "one-too-many")
        with pytest.raises(RequestNotFound):
            await b.record("never-served", "like")
    finally:
        await a.close()
        await b.close()


async def test_redis_records_expire(redis_server: RedisServer) -> None:
    a, b = FeedbackStore(redis_server.url, ttl=0.2), FeedbackStore(redis_server.url, ttl=0.2)
    try:
        await a.remember(served("r1"))
        assert (await b.lookup("r1")).arm == "impressionist"
        deadline = time.monotonic() + 10
        while True:
            try:
                await FeedbackStore(redis_server.url).lookup("r1")
            except RequestNotFound:
                break
            assert time.monotonic() < deadline, "record never expired"
            await asyncio.sleep(0.05)
    finally:
        await a.close()
        await b.close()


async def test_redis_outage(redis_server: RedisServer) -> None:
    store = FeedbackStore(redis_server.url, timeout=0.5)
    try:
        redis_server.kill()
        await store.remember(served("r1"))  # served anyway; this replica still knows it
        assert store.redis_errors == 1
        assert (await store.lookup("r1")).arm == "impressionist"
        with pytest.raises(Unavailable):
            await store.record("r1", "like")  # cannot claim it once across replicas now
        with pytest.raises(Unavailable):
            await store.lookup("elsewhere")  # only Redis could know
    finally:
        await store.close()


def test_bad_redis_url_is_one_line() -> None:
    with pytest.raises(ValueError, match="--redis-url"):
        FeedbackStore("http://nowhere")

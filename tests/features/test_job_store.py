"""The job stores: one contract for memory and a real Redis; what only Redis does
(another replica answers, watches and cancels; Redis killed); TTL and the byte bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from flux_server.errors import NotFound, Unavailable, status_of
from flux_server.experiments.assignment import ServedArm
from flux_server.jobs import lifecycle
from flux_server.jobs.lifecycle import EventKind, ImageInfo, JobEvent, JobState
from flux_server.jobs.store import JobStore, MemoryJobStore
from flux_server.jobs.store_redis import RedisJobStore

from .redis_server import RedisServer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def image_info(data: bytes, seed: int = 3) -> ImageInfo:
    return ImageInfo(seed=seed, format="png", width=16, height=16, size=len(data))


class Owner:
    """The replica running a job: applies transitions and writes them to its store."""

    def __init__(self, store: JobStore, job_id: str = "job_a") -> None:
        self.store = store
        self.state, self.first = lifecycle.submit(job_id, now=time.time(), position=0, owner="r1")

    async def create(self) -> None:
        await self.store.create(self.state, self.first)

    async def apply(self, change: tuple[JobState, JobEvent | None], images=None) -> None:
        self.state, event = change
        await self.store.save(self.state, event, images)

    async def run(self, steps: int = 2, data: bytes = PNG) -> None:
        await self.apply(lifecycle.start(self.state, now=time.time(), total=steps))
        for done in range(1, steps + 1):
            await self.apply(lifecycle.step(self.state, done, steps))
        await self.apply(
            lifecycle.succeed(self.state, now=time.time(), images=[image_info(data)]), [data]
        )


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        made: JobStore = MemoryJobStore(ttl=60, max_bytes=1 << 20)
    else:
        server = RedisServer(tmp_path)
        server.start()
        request.addfinalizer(server.kill)
        made = RedisJobStore(server.url, ttl=60, poll_interval=0.5)
    await made.start()
    yield made
    await made.close()


async def collect(events: AsyncIterator[JobEvent], into: list[JobEvent]) -> None:
    async for event in events:
        into.append(event)


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- the contract, for both stores ----------------------------------------------------------


async def test_a_job_is_read_back_with_its_images(store: JobStore) -> None:
    owner = Owner(store)
    await owner.create()
    assert (await store.load("job_a")).status is lifecycle.JobStatus.QUEUED
    await owner.run()
    state = await store.load("job_a")
    assert state == owner.state and state.status is lifecycle.JobStatus.SUCCEEDED
    assert await store.image("job_a", 0) == PNG
    with pytest.raises(NotFound, match="no image 1"):
        await store.image("job_a", 1)


async def test_a_job_is_read_back_with_its_experiment_arm(store: JobStore) -> None:
    arm = ServedArm("impressionist-filter", "ink", "realistic-ink")
    owner = Owner(store)
    owner.state, owner.first = lifecycle.submit(
        "job_a", now=time.time(), position=0, experiment=arm
    )
    await owner.create()
    assert (await store.load("job_a")).experiment == arm
    await owner.run()
    assert (await store.load("job_a")).experiment == arm


async def test_unknown_ids_are_not_found_naming_the_ttl(store: JobStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.load("job_nope")
    assert "--job-ttl 60s" in caught.value.message and status_of(caught.value).http == 404
    with pytest.raises(NotFound):
        await store.image("job_nope", 0)
    with pytest.raises(NotFound):
        await store.request_cancel("job_nope")
    with pytest.raises(NotFound):
        await anext(aiter(store.watch("job_nope")))


async def test_a_watcher_sees_every_event_once_and_ends_at_the_terminal_one(
    store: JobStore,
) -> None:
    owner = Owner(store)
    await owner.create()
    seen: list[JobEvent] = []
    watcher = asyncio.create_task(collect(store.watch("job_a"), seen))
    await until(lambda: len(seen) == 1)
    await owner.run(steps=3)
    await asyncio.wait_for(watcher, 10)
    assert [e.kind.value for e in seen] == [
        "queued", "running", "progress", "progress", "progress", "succeeded",
    ]  # fmt: skip
    assert [e.seq for e in seen] == sorted({e.seq for e in seen})
    assert seen[-1].data["images"][0]["url"] == "/jobs/job_a/images/0"


async def test_a_late_watcher_gets_the_current_state_first(store: JobStore) -> None:
    owner = Owner(store)
    await owner.create()
    await owner.apply(lifecycle.start(owner.state, now=time.time(), total=4))
    await owner.apply(lifecycle.step(owner.state, 1, 4))
    seen: list[JobEvent] = []
    watcher = asyncio.create_task(collect(store.watch("job_a"), seen))
    await until(lambda: len(seen) == 2)
    assert [e.kind for e in seen] == [EventKind.RUNNING, EventKind.PROGRESS]
    assert seen[1].data == {"step": 1, "total": 4}
    await owner.apply(lifecycle.cancel(owner.state, now=time.time()))
    await asyncio.wait_for(watcher, 10)
    assert seen[-1].kind is EventKind.CANCELED and len(seen) == 3
    # Watching a finished job gives its outcome and ends.
    done: list[JobEvent] = []
    await asyncio.wait_for(collect(store.watch("job_a"), done), 10)
    assert [e.kind for e in done] == [EventKind.CANCELED]


async def test_cancel_requests_reach_the_owner_only_while_the_job_runs(store: JobStore) -> None:
    asked: list[str] = []
    store.on_cancel(asked.append)
    owner = Owner(store)
    await owner.create()
    state = await store.request_cancel("job_a")
    assert state.status is lifecycle.JobStatus.QUEUED
    await until(lambda: asked == ["job_a"])
    await owner.apply(lifecycle.cancel(owner.state, now=time.time()))
    assert (await store.request_cancel("job_a")).status is lifecycle.JobStatus.CANCELED
    await asyncio.sleep(0)  # a second delivery would be queued by now
    assert asked == ["job_a"]


# --- Redis: any replica ---------------------------------------------------------------------


async def test_another_replica_reads_watches_and_cancels(redis_server: RedisServer) -> None:
    owner_store = RedisJobStore(redis_server.url, ttl=60, poll_interval=0.5)
    other = RedisJobStore(redis_server.url, ttl=60, poll_interval=0.5)
    asked: list[str] = []
    owner_store.on_cancel(asked.append)
    await owner_store.start()
    await other.start()
    try:
        owner = Owner(owner_store)
        await owner.create()
        seen: list[JobEvent] = []
        watcher = asyncio.create_task(collect(other.watch("job_a"), seen))
        await until(lambda: len(seen) == 1)
        await owner.apply(lifecycle.start(owner.state, now=time.time(), total=2))
        await owner.apply(lifecycle.step(owner.state, 1, 2))
        await until(lambda: len(seen) == 3)
        assert seen[-1].data == {"step": 1, "total": 2}
        # A cancel arriving at the other replica is delivered to the owner.
        assert (await other.request_cancel("job_a")).status is lifecycle.JobStatus.RUNNING
        await until(lambda: asked == ["job_a"])
        await owner.apply(lifecycle.cancel(owner.state, now=time.time()))
        await asyncio.wait_for(watcher, 10)
        assert seen[-1].kind is EventKind.CANCELED
        # A second job's result is read from the other replica.
        second = Owner(owner_store, "job_b")
        await second.create()
        await second.run()
        assert await other.image("job_b", 0) == PNG
        assert (await other.load("job_b")).images == (image_info(PNG),)
    finally:
        await owner_store.close()
        await other.close()


async def test_redis_down_refuses_new_jobs_and_reads(redis_server: RedisServer) -> None:
    store = RedisJobStore(redis_server.url, ttl=60, timeout=0.5)
    try:
        owner = Owner(store)
        await owner.create()
        redis_server.kill()
        refused = Owner(store, "job_b")
        with pytest.raises(Unavailable, match="Redis") as caught:
            await refused.create()
        assert status_of(caught.value).http == 503
        with pytest.raises(Unavailable):
            await store.load("job_a")
        with pytest.raises(Unavailable):
            await store.request_cancel("job_a")
        with pytest.raises(Unavailable):
            await owner.apply(lifecycle.start(owner.state, now=time.time(), total=1))
        # Back again (an empty Redis): new jobs are accepted once more.
        redis_server.start()
        await until_ok(refused.create)
    finally:
        await store.close()


async def until_ok(action: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await action()  # type: ignore[misc]
            return
        except Unavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_redis_expires_finished_jobs_after_the_ttl(redis_server: RedisServer) -> None:
    store = RedisJobStore(redis_server.url, ttl=0.3)
    try:
        owner = Owner(store)
        await owner.create()
        await owner.run()
        assert await store.image("job_a", 0) == PNG
        deadline = time.monotonic() + 10
        while True:
            try:
                await store.load("job_a")
            except NotFound as exc:
                assert "--job-ttl 0.3s" in exc.message
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        with pytest.raises(NotFound):
            await store.image("job_a", 0)
    finally:
        await store.close()


# --- memory: TTL and the byte bound -------------------------------------------------------


async def test_memory_expires_finished_jobs_but_not_live_ones() -> None:
    now = [1000.0]
    store = MemoryJobStore(ttl=30, max_bytes=1 << 20, clock=lambda: now[0])
    done, live = Owner(store, "job_done"), Owner(store, "job_live")
    for owner in (done, live):
        owner.state, owner.first = lifecycle.submit(owner.state.id, now=now[0], position=0)
        await owner.create()
    await done.apply(lifecycle.start(done.state, now=now[0], total=1))
    await done.apply(lifecycle.succeed(done.state, now=now[0], images=[image_info(PNG)]), [PNG])
    now[0] += 29
    assert (await store.load("job_done")).status is lifecycle.JobStatus.SUCCEEDED
    now[0] += 2
    with pytest.raises(NotFound, match="--job-ttl 30s"):
        await store.load("job_done")
    assert (await store.load("job_live")).status is lifecycle.JobStatus.QUEUED
    assert len(store) == 1


async def test_memory_evicts_the_oldest_finished_results_for_the_byte_bound() -> None:
    big = bytes(3000)
    store = MemoryJobStore(ttl=60, max_bytes=9000)
    owners = [Owner(store, f"job_{i}") for i in range(3)]
    waiting = Owner(store, "job_waiting")
    await waiting.create()
    for owner in owners:
        await owner.create()
        await owner.run(data=big)
    assert store.size_bytes <= 9000
    with pytest.raises(NotFound, match="--job-max-bytes"):
        await store.load("job_0")
    assert await store.image("job_2", 0) == big
    assert (await store.load("job_waiting")).status is lifecycle.JobStatus.QUEUED


async def test_cancels_reach_the_owner_again_after_a_redis_restart(
    redis_server: RedisServer,
) -> None:
    owner_store = RedisJobStore(redis_server.url, ttl=60, timeout=0.5)
    other = RedisJobStore(redis_server.url, ttl=60, timeout=0.5)
    asked: list[str] = []
    owner_store.on_cancel(asked.append)
    await owner_store.start()

    async def subscribers() -> int:
        [(_, count)] = await other._client.pubsub_numsub(other.cancel_channel)
        return int(count)

    try:
        deadline = time.monotonic() + 10
        while await subscribers() < 1:  # the owner listens before Redis goes away
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        redis_server.kill()
        redis_server.start()
        # The job is recorded after the restart; its cancel must still be heard.
        await until_ok(Owner(owner_store).create)
        deadline = time.monotonic() + 20
        while not asked:
            assert time.monotonic() < deadline, "the owner never heard the cancel"
            await other.request_cancel("job_a")
            await asyncio.sleep(0.1)
        assert set(asked) == {"job_a"}
    finally:
        await owner_store.close()
        await other.close()

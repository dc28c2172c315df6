"""The scheduler with a fake engine: batching, priority, backpressure, deadlines,
cancellation, split on failure, drain. Conditions are polled, never slept for."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from flux_server.errors import DeadlineExceeded, QueueFull, Unavailable
from flux_server.scheduling.batcher import Batcher


class FakeEngine:
    """Records every call; a call can be held at a gate to let a queue build up."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, payloads: Sequence[str]) -> list[str]:
        self.calls.append(list(payloads))
        self.entered.set()
        await self.gate.wait()
        if any(p.startswith("bad") for p in payloads):
            raise MemoryError("out of memory")
        return [p.upper() for p in payloads]


def make(engine: FakeEngine, **kwargs: object) -> Batcher[str, str]:
    options: dict[str, object] = dict(
        key=lambda p: p.split(":")[0], max_batch_size=4, max_delay=0.2, max_queue=8
    )
    options.update(kwargs)
    batcher: Batcher[str, str] = Batcher(engine, **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    # Polls a condition the code under test exposes no event for (queue depth).
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def hold(engine: FakeEngine, batcher: Batcher[str, str]) -> asyncio.Task:
    """Occupy the worker with one request held at the gate."""
    engine.gate.clear()
    engine.entered.clear()
    task = asyncio.create_task(batcher.submit("hold:0", priority=True))
    await engine.entered.wait()
    return task


async def test_compatible_requests_share_a_call() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    blocker = await hold(engine, batcher)
    tasks = [asyncio.create_task(batcher.submit(f"a:{i}")) for i in range(4)]
    tasks += [asyncio.create_task(batcher.submit(f"b:{i}")) for i in range(2)]
    await until(lambda: batcher.depth == 6)
    engine.gate.set()
    results = await asyncio.gather(*tasks)
    await blocker
    assert [r for r, _ in results] == ["A:0", "A:1", "A:2", "A:3", "B:0", "B:1"]
    assert [info.size for _, info in results] == [4, 4, 4, 4, 2, 2]
    assert engine.calls[1:] == [["a:0", "a:1", "a:2", "a:3"], ["b:0", "b:1"]]
    await batcher.drain(5)


async def test_a_lone_request_waits_at_most_max_delay() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=0.01)
    result, info = await batcher.submit("a:1")
    assert result == "A:1" and info.size == 1
    await batcher.drain(5)


async def test_units_cap_the_batch() -> None:
    engine = FakeEngine()
    batcher = make(engine, units=lambda p: int(p.split(":")[1]))
    blocker = await hold(engine, batcher)
    tasks = [asyncio.create_task(batcher.submit(p)) for p in ("a:3", "a:2", "a:1", "a:5")]
    await until(lambda: batcher.depth == 4)
    engine.gate.set()
    await asyncio.gather(*tasks, blocker)
    # 3 + 1 fit in 4; 2 waits for the next call; 5 is over the cap and runs alone.
    assert engine.calls[1:] == [["a:3", "a:1"], ["a:2"], ["a:5"]]
    await batcher.drain(5)


async def test_priority_overtakes_waiting_normal_requests() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=1)
    blocker = await hold(engine, batcher)
    normal = [asyncio.create_task(batcher.submit(f"n{i}:1")) for i in range(3)]
    await until(lambda: batcher.depth == 3)
    urgent = asyncio.create_task(batcher.submit("urgent:1", priority=True))
    await until(lambda: batcher.depth == 4)
    engine.gate.set()
    await asyncio.gather(*normal, urgent, blocker)
    assert engine.calls[1] == ["urgent:1"]
    assert engine.calls[2:] == [["n0:1"], ["n1:1"], ["n2:1"]]
    await batcher.drain(5)


async def test_full_queue_is_refused_with_retry_after() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_queue=2)
    blocker = await hold(engine, batcher)
    waiting = [asyncio.create_task(batcher.submit(f"a:{i}")) for i in range(2)]
    await until(lambda: batcher.depth == 2)
    with pytest.raises(QueueFull) as caught:
        await batcher.submit("a:9")
    assert caught.value.retry_after >= 1
    engine.gate.set()
    await asyncio.gather(*waiting, blocker)
    await batcher.drain(5)


async def test_deadline_while_waiting_leaves_the_queue() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    blocker = await hold(engine, batcher)
    with pytest.raises(DeadlineExceeded, match="waited"):
        await batcher.submit("a:1", timeout=0.05)
    assert batcher.depth == 0
    engine.gate.set()
    await blocker
    assert ["a:1"] not in engine.calls
    await batcher.drain(5)


async def test_deadline_while_running() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=0)
    engine.gate.clear()
    with pytest.raises(DeadlineExceeded, match="ran"):
        await batcher.submit("a:1", timeout=0.1)
    engine.gate.set()
    await batcher.drain(5)


async def test_cancelled_caller_leaves_the_queue() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    blocker = await hold(engine, batcher)
    gone = asyncio.create_task(batcher.submit("gone:1"))
    stays = asyncio.create_task(batcher.submit("stays:1"))
    await until(lambda: batcher.depth == 2)
    gone.cancel()
    await until(lambda: batcher.depth == 1)
    engine.gate.set()
    await asyncio.gather(stays, blocker)
    assert all("gone:1" not in call for call in engine.calls)
    await batcher.drain(5)


async def test_a_failing_request_is_split_out_of_its_batch() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    blocker = await hold(engine, batcher)
    tasks = [asyncio.create_task(batcher.submit(p)) for p in ("bad:0", "bad:1", "bad:2", "bad:3")]
    good = [asyncio.create_task(batcher.submit(f"good:{i}")) for i in range(3)]
    await until(lambda: batcher.depth == 7)
    engine.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, MemoryError) for o in outcomes)
    assert [r for r, _ in await asyncio.gather(*good)] == ["GOOD:0", "GOOD:1", "GOOD:2"]
    await blocker
    await batcher.drain(5)


async def test_split_isolates_the_one_bad_request() -> None:
    async def engine(payloads: Sequence[str]) -> list[str]:
        if "x:bad" in payloads:
            raise MemoryError("out of memory")
        return list(payloads)

    batcher: Batcher[str, str] = Batcher(
        engine, key=lambda p: p.split(":")[0], max_batch_size=4, max_delay=1.0
    )
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(p)) for p in ("x:1", "x:bad", "x:3", "x:4")]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[1], MemoryError)
    assert [o[0] for i, o in enumerate(outcomes) if i != 1] == ["x:1", "x:3", "x:4"]  # type: ignore[index]
    await batcher.drain(5)


async def test_drain_finishes_accepted_work_and_refuses_new() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    blocker = await hold(engine, batcher)
    tasks = [asyncio.create_task(batcher.submit(f"a:{i}")) for i in range(3)]
    await until(lambda: batcher.depth == 3)
    drain = asyncio.create_task(batcher.drain(10))
    await until(lambda: not batcher.accepting)
    with pytest.raises(Unavailable):
        await batcher.submit("late:1")
    engine.gate.set()
    assert await drain is True
    assert [r for r, _ in await asyncio.gather(*tasks)] == ["A:0", "A:1", "A:2"]
    await blocker


async def test_drain_timeout_fails_what_is_left() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    blocker = await hold(engine, batcher)
    waiting = asyncio.create_task(batcher.submit("a:1"))
    await until(lambda: batcher.depth == 1)
    assert await batcher.drain(0.05) is False
    with pytest.raises(Unavailable):
        await waiting
    # The request still running when time ran out is answered too, not left hanging.
    with pytest.raises(Unavailable, match="before this request finished"):
        await blocker


async def test_queued_without_waiting_placed_withdrawn_and_refused_up_front() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_queue=3, max_delay=0.0)
    held = await hold(engine, batcher)
    normal = batcher.enqueue("a:1")
    urgent = batcher.enqueue("b:1", priority=True)
    batcher.enqueue("c:1")
    # Places as the worker takes them: the priority lane first.
    assert batcher.positions() == {0: "b:1", 1: "a:1", 2: "c:1"}
    with pytest.raises(QueueFull):
        batcher.check_capacity()
    assert batcher.withdraw(normal) is True  # still waiting: out of the queue
    assert batcher.positions() == {0: "b:1", 1: "c:1"}
    batcher.check_capacity()
    engine.gate.set()
    assert (await batcher.wait(urgent, timeout=5))[0] == "B:1"
    await held
    assert all("a:1" not in call for call in engine.calls)
    await batcher.drain(5)
    with pytest.raises(Unavailable):
        batcher.check_capacity()


async def test_a_lone_request_on_an_idle_engine_does_not_wait_for_company() -> None:
    engine = FakeEngine()
    # A delay no test would sit through: the request must not wait for it.
    batcher = make(engine, max_delay=600)
    async with asyncio.timeout(10):
        result, info = await batcher.submit("a:1")
    assert result == "A:1" and info.size == 1
    await batcher.drain(5)


async def test_requests_sent_together_to_an_idle_engine_share_a_call() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=600)
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(batcher.submit(f"a:{i}") for i in range(3)))
    assert [info.size for _, info in results] == [3, 3, 3]
    await batcher.drain(5)


async def test_requests_arriving_while_busy_gather_into_the_next_call() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=600)
    engine.gate.clear()
    first = asyncio.create_task(batcher.submit("a:0"))
    await engine.entered.wait()
    later = [asyncio.create_task(batcher.submit(f"a:{i}")) for i in range(1, 6)]
    await until(lambda: batcher.depth == 5)
    engine.gate.set()
    async with asyncio.timeout(10):
        await asyncio.gather(first, *later)
    assert engine.calls == [["a:0"], ["a:1", "a:2", "a:3", "a:4"], ["a:5"]]
    await batcher.drain(5)


async def test_the_always_policy_waits_for_company_up_to_max_delay() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=600, wait="always", max_batch_size=2)
    first = asyncio.create_task(batcher.submit("a:0"))
    await until(lambda: batcher.depth == 1)
    # Still waiting for company: no call yet; the second request fills the batch.
    assert engine.calls == []
    second = asyncio.create_task(batcher.submit("a:1"))
    async with asyncio.timeout(10):
        results = await asyncio.gather(first, second)
    assert [info.size for _, info in results] == [2, 2]
    assert engine.calls == [["a:0", "a:1"]]
    await batcher.drain(5)


async def test_an_idle_engine_waits_for_announced_arrivals() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=600)
    async with batcher.arrival() as second_arrival:
        # The second request is still passing its checks: the first waits for it.
        first = asyncio.create_task(batcher.submit("a:0"))
        await until(lambda: batcher.depth == 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert engine.calls == []
        second = asyncio.create_task(batcher.submit("a:1", arrival=second_arrival))
        async with asyncio.timeout(10):
            results = await asyncio.gather(first, second)
    assert [info.size for _, info in results] == [2, 2]
    assert engine.calls == [["a:0", "a:1"]]
    await batcher.drain(5)


async def test_an_arrival_that_gives_up_releases_the_waiting_request() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=600)
    async with batcher.arrival():
        first = asyncio.create_task(batcher.submit("a:0"))
        await until(lambda: batcher.depth == 1)
        assert engine.calls == []
    # Refused (or answered from the cache) before it queued: the first goes alone.
    async with asyncio.timeout(10):
        result, info = await first
    assert result == "A:0" and info.size == 1
    await batcher.drain(5)


async def test_announced_arrivals_are_waited_for_at_most_max_delay() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_delay=0.05)
    async with batcher.arrival():  # never queues within the test
        async with asyncio.timeout(10):
            result, info = await batcher.submit("a:0")
    assert result == "A:0" and info.size == 1
    await batcher.drain(5)


async def test_lanes_take_the_head_and_what_fits_with_it() -> None:
    """What a batch takes, without a worker: same key only, up to the capacity (a lone
    request over it still runs, alone), and a request whose caller left takes no room."""
    from flux_server.scheduling.batch_items import QueueItem
    from flux_server.scheduling.lanes import Lanes

    loop = asyncio.get_running_loop()
    depths: list[int] = []
    lanes: Lanes[str, str] = Lanes(max_batch_size=4, on_depth=depths.append)

    def item(payload: str, units: int) -> QueueItem[str, str]:
        key, _ = payload.split(":")
        queued: QueueItem[str, str] = QueueItem(
            payload, key, units, False, float("inf"), loop.time(), 0, loop.create_future()
        )
        lanes.add(queued)
        return queued

    head, gone, other, mate, over = (
        item("a:0", 2),
        item("a:1", 2),
        item("b:0", 1),
        item("a:2", 2),
        item("a:3", 1),
    )
    gone.future.cancel()
    assert lanes.units_for(head) == 4  # counts the one whose caller left: it is still queued
    assert lanes.take(lanes.normal, head) == [head, mate]
    assert lanes.normal == [other, over] and depths[-1] == 2
    big = item("c:0", 9)
    assert lanes.take(lanes.normal, big) == [big]

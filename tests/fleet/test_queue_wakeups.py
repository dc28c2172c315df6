"""The queue's worker and step watch on a real redis-server, with a runner that makes no
images (no model, so each test takes well under a second): which entries share a call,
and what makes a worker look at the priority lane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from flux_server.execution.cancellation import CancelToken
from flux_server.execution.step_priority import NotTaken
from flux_server.queue import names
from flux_server.queue.broker import Broker, connect
from flux_server.queue.front import FleetQueue
from flux_server.queue.step_watch import StepWatch
from flux_server.queue.worker import QueueWorker
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.scheduling.work import Made, Work

JOB = ResolvedRequest(
    prompt="a lane", negative_prompt=None, width=64, height=64, steps=2, guidance_scale=3.5,
    true_cfg_scale=1.0, seed=1, num_images=1, output_format="png", adapters=(),
    style_preset=None,
)  # fmt: skip


class InstantRunner:
    """Answers every batch at once with one placeholder image per request."""

    step = 0

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def run_batch(self, works: Sequence[Work]) -> list[Made]:
        self.batches.append([w.request_id for w in works])
        return [Made([GeneratedImage(b"png", "png", 64, 64, 1)]) for _ in works]

    async def run_at_step(self, works: Sequence[Work]) -> list[Made]:
        raise NotTaken()


async def until(check: Callable[[], Any], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_priority_entry_runs_first_and_alone(redis: Any) -> None:
    """Three normal entries and then a priority one, all of one shape, wait when the
    worker starts: the priority one runs alone, then the three together (as in the
    in-process batcher's lane; normal company would make the priority call slower)."""
    track = "lanes"
    front = FleetQueue(Broker(connect(redis.url)), track)
    for i, high in enumerate([False, False, False, True]):
        _, pubsub = await front.place(
            JOB, request_id=f"lane-{i}", key_id="k", priority=high, timeout=60
        )
        await pubsub.aclose()
    runner = InstantRunner()
    worker = QueueWorker(
        Broker(connect(redis.url)), runner, track=track, name="w", max_units=4, visibility=60
    )  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: sum(map(len, runner.batches)) == 4, what="four requests run")
    finally:
        stop.set()
        await task
    assert runner.batches == [["lane-3"], ["lane-0", "lane-1", "lane-2"]]


async def test_a_batch_start_offers_the_priority_work_already_waiting() -> None:
    """A priority entry whose wake came while the worker was between batches (no call to
    offer it to) is looked for when the next batch starts, not only on the next wake."""
    looked: list[int] = []

    async def serve_priority() -> bool:
        looked.append(1)
        return False  # nothing waits

    watch = StepWatch(None, "t", serve_priority)  # type: ignore[arg-type]
    watch.running({"r-1": CancelToken()})
    await watch.settled()
    assert looked == [1]
    watch.running({})
    await watch.settled()
    assert looked == [1], "no batch runs: nothing to offer priority work to"


async def test_priority_announced_while_an_offer_is_out_is_read_after_it() -> None:
    """A wake heard while an offer is being served is not dropped: the lane is read
    again when the offer ends; and after an offer served something, the lane is read
    again until it is empty (a second priority request is served at a later boundary of
    the same call, not after the whole call)."""
    gate = asyncio.Event()
    answers = [False, True, False]  # nothing (another worker took it), then one, then none
    calls = 0

    async def serve_priority() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return answers[calls - 1]

    watch = StepWatch(None, "t", serve_priority)  # type: ignore[arg-type]
    wake = names.wake("t")
    watch.running({"r-1": CancelToken()})
    watch._heard(wake, names.PRIORITIES[0])  # a priority entry's wake: the first offer
    await until(lambda: calls == 1, what="the first offer")
    watch._heard(wake, names.PRIORITIES[0])  # another, while the first is out
    gate.set()
    await watch.settled()
    assert calls == 3

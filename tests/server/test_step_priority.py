"""Priority at the step on the tiny model: work offered while a call runs is served at its
next step boundary (a nested call, the running one paused), and the paused call's images
are bit-for-bit those of an unpaused call; work offered with no call running, or left
when the call ends, is answered NotTaken. The in-process batcher does the same."""

from __future__ import annotations

import asyncio
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from flux_server.execution.engine import Engine
from flux_server.execution.inputs import TextToImage
from flux_server.execution.step_hooks import chain
from flux_server.execution.step_priority import NotTaken, StepBreak
from flux_server.scheduling.batcher import Batcher


def job(**overrides: Any) -> TextToImage:
    values: dict[str, Any] = dict(
        prompt="a quiet harbour", width=64, height=32, steps=6, guidance_scale=3.5, seed=5
    )
    values.update(overrides)
    return TextToImage(**values)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir), device="cpu")


def test_chain_passes_replacements_along_and_skips_none() -> None:
    seen: list[Any] = []
    callback = chain([None, lambda p, s, t, d: {**d, "x": 2}, lambda p, s, t, d: seen.append(d)])
    assert callback is not None and chain([None]) is None
    assert callback(None, 0, 0, {"x": 1}) == {"x": 2} and seen == [{"x": 2}]


def test_offered_work_runs_at_the_next_boundary_and_the_paused_call_is_unchanged(
    engine: Engine,
) -> None:
    [[alone]] = engine.generate([job()])
    [[priority_alone]] = engine.generate([job(prompt="urgent", steps=3, seed=9, width=32)])
    pause = StepBreak()
    steps: list[int] = []
    offered: list[Any] = []

    def progress(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:  # offered mid-call, from another thread (as the event loop does)
            thread = threading.Thread(target=lambda: offered.append(pause.offer(nested_priority)))
            thread.start()
            thread.join()

    def nested_priority() -> Any:
        return (list(steps), engine.generate([job(prompt="urgent", steps=3, seed=9, width=32)]))

    with pause.open():
        [[paused]] = engine.generate([job()], progress, None, [pause.hook])
    steps_seen_by_priority, [[priority]] = offered[0].result(timeout=0)
    assert steps_seen_by_priority == [1, 2], "served at the boundary after step 2"
    assert steps == [1, 2, 3, 4, 5, 6] and pause.served == 1
    assert paused.image.tobytes() == alone.image.tobytes()
    assert priority.image.tobytes() == priority_alone.image.tobytes()


def test_not_taken_without_a_running_call_or_when_the_call_ends_first(engine: Engine) -> None:
    pause = StepBreak()
    with pytest.raises(NotTaken):
        pause.offer(lambda: 1).result(timeout=0)
    with pause.open():
        left = pause.offer(lambda: 1)  # no boundary passes before the call ends
    with pytest.raises(NotTaken):
        left.result(timeout=0)


async def test_the_batcher_serves_a_priority_request_at_the_step() -> None:
    """A fake step loop: the running batch passes boundaries until released; the priority
    request is served at one of them, before the batch ends."""
    pause = StepBreak()
    pipe = types.SimpleNamespace(scheduler={"step_index": 0})
    order: list[str] = []
    release = threading.Event()

    def steps() -> list[str]:
        with pause.open():
            for step in range(200):
                pause.hook(pipe, step, 0, {})
                if release.is_set():
                    break
                release.wait(0.005)
        return ["slow"]

    running = asyncio.Event()

    async def run_batch(payloads: Any) -> list[str]:
        running.set()
        out = await asyncio.get_running_loop().run_in_executor(None, steps)
        order.append("slow")
        return out

    async def run_at_step(payloads: Any) -> list[str]:
        def nested() -> list[str]:
            order.append("priority")
            release.set()
            return ["fast"] * len(payloads)

        return list(await asyncio.wrap_future(pause.offer(nested)))

    batcher: Batcher[str, str] = Batcher(run_batch, key=len, run_at_step=run_at_step)
    batcher.start()
    try:
        slow = asyncio.create_task(batcher.submit("slow"))
        await running.wait()  # the slow batch has started
        fast, _ = await batcher.submit("fast", priority=True)
        assert fast == "fast"
        await slow
    finally:
        await batcher.close()
    assert order == ["priority", "slow"]

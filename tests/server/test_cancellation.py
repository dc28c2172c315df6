"""Cancelling inside a pipeline call, on the tiny model: a lone job stops at the next
step; a batch runs on for its mates, whose images are unchanged."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from flux_server.execution.cancellation import (
    BatchCancellation,
    CancelToken,
    GenerationInterrupted,
)
from flux_server.execution.engine import Engine
from flux_server.execution.inputs import TextToImage


def job(**overrides: Any) -> TextToImage:
    values: dict[str, Any] = dict(
        prompt="a lighthouse", width=64, height=32, steps=4, guidance_scale=3.5, seed=5
    )
    values.update(overrides)
    return TextToImage(**values)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir), device="cpu")


def test_tokens_and_batches() -> None:
    a, b = CancelToken(), CancelToken()
    batch = BatchCancellation([a, None, b])
    assert not batch.should_stop() and batch.cancelled_members() == []
    a.cancel()
    b.cancel()
    # A member without a token (a synchronous request) keeps the call going.
    assert not batch.should_stop() and batch.cancelled_members() == [0, 2]
    assert BatchCancellation([a, b]).should_stop()
    assert not BatchCancellation([]).should_stop()


def test_a_running_job_stops_at_the_next_step_and_the_engine_serves_on(engine: Engine) -> None:
    token = CancelToken()
    steps: list[int] = []
    reached = threading.Event()

    def progress(step: int, total: int) -> None:
        steps.append(step)
        if step == 3:
            reached.set()
            # The loop cancels while the engine thread is between steps.
            assert cancel_from_loop.wait(timeout=30)

    cancel_from_loop = threading.Event()
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(engine.generate([job(steps=50)], progress, lambda: token.cancelled))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert reached.wait(timeout=120)
    token.cancel()
    cancel_from_loop.set()
    worker.join(timeout=120)
    [error] = outcome
    assert isinstance(error, GenerationInterrupted)
    assert (error.step, error.total) == (3, 50)
    assert steps == [1, 2, 3], "no step ran after the cancel"
    # Nothing is left half-set in the pipeline: the next call gives the usual image.
    [[again]] = engine.generate([job()])
    [[reference]] = engine.generate([job()])
    assert again.image.tobytes() == reference.image.tobytes()


def test_a_job_cancelled_before_its_call_never_starts(engine: Engine) -> None:
    token = CancelToken()
    token.cancel()
    steps: list[int] = []
    with pytest.raises(GenerationInterrupted) as caught:
        engine.generate(
            [job()], lambda s, t: steps.append(s), BatchCancellation([token]).should_stop
        )
    assert caught.value.step == 0 and steps == []


def test_a_cancelled_batch_member_leaves_its_mates_images_unchanged(engine: Engine) -> None:
    batch_jobs = [job(seed=1), job(seed=9, prompt="a red boat")]
    [_, [uncancelled]] = engine.generate(batch_jobs)
    cancelled, mate = CancelToken(), CancelToken()
    batch = BatchCancellation([cancelled, mate])

    def progress(step: int, total: int) -> None:
        if step == 1:
            cancelled.cancel()

    results = engine.generate(batch_jobs, progress, batch.should_stop)
    assert batch.cancelled_members() == [0]
    assert len(results) == 2
    assert results[1][0].image.tobytes() == uncancelled.image.tobytes()
    # Once the mate is cancelled too, the call stops at the next step.
    steps: list[int] = []
    a, b = CancelToken(), CancelToken()

    def cancel_both(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:
            a.cancel()
            b.cancel()

    with pytest.raises(GenerationInterrupted):
        engine.generate(
            [job(seed=1), job(seed=2)], cancel_both, BatchCancellation([a, b]).should_stop
        )
    assert steps == [1, 2]

"""The owner's side of async jobs, with the real engine on the tiny model, a real
webhook receiver and a real Redis: every step watched, results equal to a synchronous
call, a running job cancelled within a step (also from another replica), shutdown
leaving no job unaccounted for."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from flux_server.errors import NotEnabled, RefusedTarget, Unavailable
from flux_server.execution.cancellation import BatchCancellation, GenerationInterrupted
from flux_server.execution.engine import Engine
from flux_server.jobs.lifecycle import EventKind, JobEvent, JobStatus
from flux_server.jobs.manager import JobManager, LiveJob
from flux_server.jobs.store import MemoryJobStore
from flux_server.jobs.store_redis import RedisJobStore
from flux_server.jobs.webhook_url import AllowList
from flux_server.jobs.webhooks import WebhookSender
from flux_server.metrics import Metrics
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage

from .redis_server import RedisServer

SECRET = "whsec_" + base64.b64encode(b"fluxserve-webhook-test-key-0123").decode()


def job(**overrides: object) -> ResolvedRequest:
    values: dict[str, object] = dict(
        prompt="a lighthouse", negative_prompt=None, width=64, height=32, steps=3,
        guidance_scale=3.5, true_cfg_scale=1.0, seed=21, num_images=1,
        output_format="png", adapters=(), style_preset=None,
    )  # fmt: skip
    values.update(overrides)
    return ResolvedRequest.model_validate(values)


@pytest.fixture(scope="module")
def engine(tiny_flux_dir: Path) -> Engine:
    return Engine.load(str(tiny_flux_dir), device="cpu")


async def run(manager: JobManager, engine: Engine, live: LiveJob, request: ResolvedRequest) -> None:
    """What the scheduler will do for one async job in a batch of one."""
    await manager.started(live.id, request.steps)
    loop = asyncio.get_running_loop()
    batch = BatchCancellation([live.token])
    try:
        [pictures] = await loop.run_in_executor(
            None,
            engine.generate,
            [request.text_to_image()],
            manager.progress_callback(live.id),
            batch.should_stop,
        )
    except GenerationInterrupted:
        return
    images = [GeneratedImage.encoded(p.image, request.output_format, p.seed) for p in pictures]
    await manager.succeeded(live.id, images)


def _made_directly(engine: Engine, request: ResolvedRequest) -> GeneratedImage:
    """The image a synchronous call makes of ``request``, encoded as a job stores it."""
    [[picture]] = engine.generate([request.text_to_image()])
    return GeneratedImage.encoded(picture.image, request.output_format, picture.seed)


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def collect(events: AsyncIterator[JobEvent], into: list[JobEvent]) -> None:
    async for event in events:
        into.append(event)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict, bytes]]]]:
    received: list[tuple[dict, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


async def test_a_job_runs_watched_step_by_step_with_signed_webhooks(
    engine: Engine, receiver: tuple[str, list[tuple[dict, bytes]]]
) -> None:
    url, received = receiver
    metrics = Metrics()
    allow = AllowList.parse(["127.0.0.1"])
    manager = JobManager(
        MemoryJobStore(ttl=60, max_bytes=1 << 24),
        owner="r1",
        max_result_bytes=1 << 24,
        webhooks=WebhookSender(SECRET, allow, metrics=metrics),
        allow=allow,
        metrics=metrics,
    )
    await manager.start()
    try:
        target, wanted = await manager.check_webhook(url, ["start", "completed"])
        state, live = await manager.submit(position=0, webhook=target, webhook_events_filter=wanted)
        seen: list[JobEvent] = []
        watcher = asyncio.create_task(collect(manager.watch(state.id), seen))
        await until(lambda: len(seen) == 1)
        await run(manager, engine, live, job())
        await asyncio.wait_for(watcher, 30)
        assert [e.kind.value for e in seen] == [
            "queued", "running", "progress", "progress", "progress", "succeeded",
        ]  # fmt: skip
        sync = _made_directly(engine, job())
        assert await manager.image(state.id, 0) == sync.data
        assert (await manager.get(state.id)).images[0].seed == 21
        await until(lambda: len(received) == 2)
        bodies = [Webhook(SECRET).verify(body, headers) for headers, body in received]
        assert sorted(b["type"] for b in bodies) == ["job.running", "job.succeeded"]
        [done] = [b["data"] for b in bodies if b["type"] == "job.succeeded"]
        assert base64.b64decode(done["images"][0]["data"]) == sync.data
        sample = metrics.registry.get_sample_value
        assert sample("fluxserve_jobs", {"status": "succeeded"}) == 1
        assert sample("fluxserve_jobs", {"status": "running"}) == 0
    finally:
        await manager.close()


async def test_cancelling_a_running_job_stops_the_engine_within_a_step(engine: Engine) -> None:
    manager = JobManager(MemoryJobStore(ttl=60, max_bytes=1 << 24), owner="r1",
                         max_result_bytes=1 << 24)  # fmt: skip
    state, live = await manager.submit(position=0)
    seen: list[JobEvent] = []
    watcher = asyncio.create_task(collect(manager.watch(state.id), seen))
    runner = asyncio.create_task(run(manager, engine, live, job(steps=50)))
    await until(lambda: any(e.kind is EventKind.PROGRESS and e.data["step"] >= 2 for e in seen))
    canceled = await manager.cancel(state.id)
    at_cancel = max(e.data["step"] for e in seen if e.kind is EventKind.PROGRESS)
    assert canceled.status is JobStatus.CANCELED
    await asyncio.wait_for(runner, 60)
    await asyncio.wait_for(watcher, 10)
    assert seen[-1].kind is EventKind.CANCELED
    assert [e for e in seen if e.kind.terminal] == [seen[-1]]
    stored = await manager.get(state.id)
    assert stored.status is JobStatus.CANCELED
    # The engine was free again within a step or two of the cancel (steps already
    # reported may still be in flight), far short of 50.
    assert stored.progress is not None and stored.progress.step <= at_cancel + 2


async def test_a_cancel_sent_to_another_replica_reaches_the_owner(
    engine: Engine, redis_server: RedisServer
) -> None:
    owner = JobManager(RedisJobStore(redis_server.url, ttl=60, poll_interval=0.5),
                       owner="r1", max_result_bytes=1 << 24)  # fmt: skip
    other = JobManager(RedisJobStore(redis_server.url, ttl=60, poll_interval=0.5),
                       owner="r2", max_result_bytes=1 << 24)  # fmt: skip
    await owner.start()
    await other.start()
    try:
        state, live = await owner.submit(position=0)
        runner = asyncio.create_task(run(owner, engine, live, job(steps=50)))
        seen: list[JobEvent] = []
        watcher = asyncio.create_task(collect(other.watch(state.id), seen))
        await until(lambda: any(e.kind is EventKind.PROGRESS for e in seen))
        assert (await other.cancel(state.id)).status is JobStatus.RUNNING
        await asyncio.wait_for(runner, 60)
        await asyncio.wait_for(watcher, 30)
        assert live.token.cancelled and seen[-1].kind is EventKind.CANCELED
        assert (await other.get(state.id)).status is JobStatus.CANCELED
        # A finished job's result is read from the other replica.
        second, live2 = await owner.submit(position=0)
        await run(owner, engine, live2, job())
        sync = _made_directly(engine, job())
        assert await other.image(second.id, 0) == sync.data
        # Redis gone: new async jobs are refused, not accepted into the void.
        redis_server.kill()
        with pytest.raises(Unavailable):
            await owner.submit(position=0)
    finally:
        await owner.close()
        await other.close()


async def test_webhook_fields_are_checked_at_submission() -> None:
    plain = JobManager(MemoryJobStore(60, 1 << 20), owner="r1", max_result_bytes=1 << 20)
    with pytest.raises(NotEnabled, match="--webhook-secret") as caught:
        await plain.check_webhook("https://example.com/hook", None)
    assert caught.value.field == "webhook"
    with pytest.raises(Exception, match="'finished'") as bad:
        await plain.check_webhook(None, ["finished"])
    assert getattr(bad.value, "field", None) == "webhook_events_filter"
    signing = JobManager(
        MemoryJobStore(60, 1 << 20), owner="r1", max_result_bytes=1 << 20,
        webhooks=WebhookSender(SECRET, AllowList()),
    )  # fmt: skip
    with pytest.raises(RefusedTarget, match=r"169\.254\.169\.254 is a cloud metadata"):
        await signing.check_webhook("http://169.254.169.254/latest", ["completed"])
    await signing.close()


async def test_oversized_results_and_shutdown_leave_a_reason(engine: Engine) -> None:
    manager = JobManager(MemoryJobStore(60, 1 << 20), owner="r1", max_result_bytes=100)
    outcomes: list[tuple[str, str]] = []
    manager.add_listener(
        lambda state, event: event.kind.terminal and outcomes.append((state.id, event.kind.value))
    )
    state, live = await manager.submit(position=0)
    await run(manager, engine, live, job())
    failed = await manager.get(state.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert "over --job-max-bytes 100" in failed.error.message
    queued, _ = await manager.submit(position=0)
    running, _ = await manager.submit(position=1)
    await manager.started(running.id, 5)
    assert await manager.fail_unfinished("server shut down before the job ran") == 2
    for job_id in (queued.id, running.id):
        after = await manager.get(job_id)
        assert after.status is JobStatus.FAILED and after.error is not None
        assert after.error.message == "server shut down before the job ran"
    assert outcomes == [(state.id, "failed"), (queued.id, "failed"), (running.id, "failed")]


async def test_the_manager_the_settings_ask_for(redis_server: RedisServer) -> None:
    from flux_server.jobs.manager import build_job_manager
    from flux_server.settings import load_settings

    settings = load_settings(
        ["--model", "m", "--redis-url", redis_server.url, "--webhook-secret", SECRET,
         "--webhook-allow-hosts", "10.0.0.0/8", "--job-ttl", "120"]
    )  # fmt: skip
    fields = ("redis_url", "job_ttl", "job_max_bytes", "webhook_secret", "webhook_allow_hosts")
    shared = build_job_manager(
        owner="r1", longest_job=600, **{f: getattr(settings, f) for f in fields}
    )
    assert isinstance(shared.store, RedisJobStore) and shared.store.ttl == 120
    assert shared.store.live_ttl_ms == 600_000
    assert shared.webhooks is not None and shared.allow.networks
    await shared.start()
    state, _ = await shared.submit(position=0)
    assert (await shared.get(state.id)).owner == "r1"
    await shared.close()
    local = build_job_manager(
        owner="r1", redis_url=None, job_ttl=60, job_max_bytes=4096,
        webhook_secret=None, webhook_allow_hosts=(),
    )  # fmt: skip
    assert isinstance(local.store, MemoryJobStore) and local.webhooks is None
    await local.close()

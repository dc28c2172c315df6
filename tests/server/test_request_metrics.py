"""The REST request metrics: endpoints labelled by route template (bounded), probes not
counted, and a streamed answer timed to its start, not to the job's end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from flux_server.api.rest.middleware import RequestMetrics
from flux_server.metrics import Metrics

STREAM_S = 1.0  # how long the stream runs after its first chunk


def _app(metrics: Metrics) -> RequestMetrics:
    app = FastAPI()

    @app.get("/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    @app.get("/jobs/{job_id}/events")
    async def events(job_id: str) -> StreamingResponse:
        async def frames() -> AsyncIterator[bytes]:
            yield b"data: queued\n\n"
            await asyncio.sleep(STREAM_S)
            yield b"data: succeeded\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return RequestMetrics(app, metrics)


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_routes_are_labelled_by_template_and_streams_timed_to_their_start() -> None:
    metrics = Metrics()
    transport = httpx.ASGITransport(app=_app(metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for job_id in ("a1", "b2"):
            assert (await client.get(f"/jobs/{job_id}")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = await client.get("/jobs/a1/events")
        took = loop.time() - started
    assert stream.text.endswith("data: succeeded\n\n") and took >= STREAM_S
    total = "fluxserve_requests_total"
    assert _sample(metrics, total, endpoint="rest:/jobs/{job_id}", code="200") == 2
    assert _sample(metrics, total, endpoint="rest:other", code="404") == 1
    assert _sample(metrics, total, endpoint="rest:/jobs/{job_id}/events", code="200") == 1
    assert _sample(metrics, total, endpoint="rest:/healthz", code="200") is None
    streamed = _sample(
        metrics, "fluxserve_request_duration_seconds_sum", endpoint="rest:/jobs/{job_id}/events"
    )
    assert streamed is not None and streamed < STREAM_S, streamed

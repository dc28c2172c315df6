"""The SDK's view of async jobs reads exactly what the server writes: job bodies and
the SSE stream, keep-alive comments included."""

from __future__ import annotations

from datetime import timezone

from flux_client.jobs import JobInfo, JobStatus, parse_sse
from flux_server.jobs import http_views, lifecycle
from flux_server.jobs.lifecycle import ImageInfo, JobError

T0 = 1_780_000_000.0
IMAGE = ImageInfo(seed=7, format="png", width=64, height=32, size=4)


def a_lifecycle() -> tuple[lifecycle.JobState, list[lifecycle.JobEvent]]:
    state, queued = lifecycle.submit("job_a", now=T0, position=1)
    state, running = lifecycle.start(state, now=T0 + 1, total=2)
    events = [queued, running]
    for done in (1, 2):
        state, event = lifecycle.step(state, done, 2)
        events.append(event)
    state, succeeded = lifecycle.succeed(state, now=T0 + 3, images=[IMAGE])
    return state, [*events, succeeded]


def test_job_bodies_parse_at_every_status() -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=1)
    info = JobInfo.from_json(http_views.job_json(state))
    assert info.status is JobStatus.QUEUED and info.queue_position == 1
    assert info.created_at is not None and info.created_at.tzinfo == timezone.utc
    assert info.created_at.timestamp() == T0
    state, _ = lifecycle.start(state, now=T0 + 1, total=4)
    state, _ = lifecycle.step(state, 3, 4)
    info = JobInfo.from_json(http_views.job_json(state))
    assert info.progress is not None and (info.progress.step, info.progress.total) == (3, 4)
    done, _ = lifecycle.succeed(state, now=T0 + 2, images=[IMAGE])
    inline = JobInfo.from_json(http_views.job_json(done, image_data=[b"\x89PNG"]))
    assert inline.status.terminal and inline.images[0].data == b"\x89PNG"
    assert inline.images[0].seed == 7 and inline.images[0].url is None
    linked = JobInfo.from_json(http_views.job_json(done))
    assert linked.images[0].url == "/jobs/job_a/images/0" and linked.images[0].data is None
    failed, _ = lifecycle.fail(state, now=T0, error=JobError("invalid_argument", "bad", "width"))
    error = JobInfo.from_json(http_views.job_json(failed)).error
    assert error is not None and (error.code, error.field) == ("invalid_argument", "width")


def test_the_sse_stream_parses_back_to_the_same_events() -> None:
    _, events = a_lifecycle()
    stream = "".join([http_views.KEEPALIVE_FRAME] + [event.to_sse() for event in events])
    parsed = list(parse_sse(stream.splitlines(keepends=True)))
    assert [(e.seq, e.kind, dict(e.data)) for e in parsed] == [
        (e.seq, e.kind.value, dict(e.data)) for e in events
    ]
    assert [e.terminal for e in parsed] == [False] * 4 + [True]
    assert parsed[-1].data["images"][0]["seed"] == 7

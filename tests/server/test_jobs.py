"""The job state machine and its JSON: transitions, events, snapshots, records."""

from __future__ import annotations

import base64
import json

import pytest

from flux_server.experiments.assignment import Assignment, ServedArm, arm_json
from flux_server.jobs import http_views, lifecycle
from flux_server.jobs.lifecycle import EventKind, ImageInfo, JobError, JobStateError, JobStatus

T0 = 1_780_000_000.0
IMAGE = ImageInfo(seed=7, format="png", width=64, height=32, size=1234)


def run_to_success() -> tuple[lifecycle.JobState, list[lifecycle.JobEvent]]:
    state, queued = lifecycle.submit("job_a", now=T0, position=2, owner="r1")
    state, moved = lifecycle.reposition(state, 0)
    assert moved is not None
    state, running = lifecycle.start(state, now=T0 + 1, total=3)
    events = [queued, moved, running]
    for done in (1, 2, 3):
        state, event = lifecycle.step(state, done, 3)
        events.append(event)
    state, succeeded = lifecycle.succeed(state, now=T0 + 4, images=[IMAGE])
    return state, [*events, succeeded]


def test_a_job_emits_queued_running_one_progress_per_step_and_one_terminal_event() -> None:
    state, events = run_to_success()
    assert [e.kind.value for e in events] == [
        "queued", "queued", "running", "progress", "progress", "progress", "succeeded",
    ]  # fmt: skip
    assert [e.seq for e in events] == list(range(1, 8))
    assert state.seq == 7
    assert events[0].data == {"queue_position": 2, "position": 3}
    assert [dict(e.data) for e in events[3:6]] == [{"step": n, "total": 3} for n in (1, 2, 3)]
    assert events[-1].data["images"][0] == {
        "seed": 7, "format": "png", "width": 64, "height": 32, "url": "/jobs/job_a/images/0",
    }  # fmt: skip
    assert state.status is JobStatus.SUCCEEDED and state.status.terminal
    assert (state.created_at, state.started_at, state.completed_at) == (T0, T0 + 1, T0 + 4)
    assert state.queue_position is None


def test_the_same_position_emits_nothing() -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=1)
    same, event = lifecycle.reposition(state, 1)
    assert event is None and same is state


@pytest.mark.parametrize("terminal", ["succeed", "fail", "cancel"])
def test_exactly_one_terminal_state(terminal: str) -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=0)
    state, _ = lifecycle.start(state, now=T0, total=2)
    if terminal == "succeed":
        state, _ = lifecycle.succeed(state, now=T0, images=[IMAGE])
    elif terminal == "fail":
        state, _ = lifecycle.fail(state, now=T0, error=JobError("internal", "boom"))
    else:
        state, _ = lifecycle.cancel(state, now=T0)
    with pytest.raises(JobStateError):
        lifecycle.succeed(state, now=T0, images=[])
    with pytest.raises(JobStateError):
        lifecycle.fail(state, now=T0, error=JobError("internal", "again"))
    with pytest.raises(JobStateError):
        lifecycle.step(state, 1, 2)
    with pytest.raises(JobStateError):
        lifecycle.start(state, now=T0, total=2)
    # A cancel that lost the race with the outcome is not an error and changes nothing.
    after, event = lifecycle.cancel(state, now=T0 + 9)
    assert after is state and event is None


def test_queued_jobs_can_be_canceled_or_failed_but_not_progress() -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=0)
    with pytest.raises(JobStateError):
        lifecycle.step(state, 1, 2)
    with pytest.raises(JobStateError):
        lifecycle.succeed(state, now=T0, images=[])
    canceled, event = lifecycle.cancel(state, now=T0 + 2)
    assert canceled.status is JobStatus.CANCELED and event is not None
    assert event.kind is EventKind.CANCELED and canceled.queue_position is None
    failed, event = lifecycle.fail(state, now=T0, error=JobError("unavailable", "drained"))
    assert failed.status is JobStatus.FAILED and event is not None
    assert event.data == {"error": {"code": "unavailable", "message": "drained", "field": None}}


def test_submit_json_is_the_202_body() -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=0)
    assert http_views.submit_json(state) == {
        "id": "job_a",
        "status": "queued",
        "created_at": "2026-05-28T20:26:40.000Z",
        "urls": {
            "get": "/jobs/job_a",
            "cancel": "/jobs/job_a/cancel",
            "events": "/jobs/job_a/events",
        },
        "experiment": None,
    }


def test_job_json_shows_only_what_applies_to_the_status() -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=3)
    body = http_views.job_json(state)
    assert body["queue_position"] == 3
    assert "progress" not in body and "images" not in body and "error" not in body
    state, _ = lifecycle.start(state, now=T0 + 0.5, total=4)
    state, _ = lifecycle.step(state, 1, 4)
    body = http_views.job_json(state)
    assert body["progress"] == {"step": 1, "total": 4} and "queue_position" not in body
    assert body["metrics"] == {"queue_seconds": 0.5}
    done, _ = lifecycle.succeed(state, now=T0 + 2, images=[IMAGE])
    inline = http_views.job_json(done, image_data=[b"\x89PNG"])
    assert inline["images"][0]["data"] == base64.b64encode(b"\x89PNG").decode()
    assert inline["images"][0]["seed"] == 7 and "url" not in inline["images"][0]
    assert http_views.job_json(done)["images"][0]["url"] == "/jobs/job_a/images/0"
    assert inline["metrics"] == {"queue_seconds": 0.5, "run_seconds": 1.5}
    failed, _ = lifecycle.fail(
        state, now=T0 + 2, error=JobError("invalid_argument", "bad", "width")
    )
    assert http_views.job_json(failed)["error"] == {
        "code": "invalid_argument", "message": "bad", "field": "width",
    }  # fmt: skip


def test_a_late_watcher_is_told_the_current_state_first() -> None:
    state, _ = lifecycle.submit("job_a", now=T0, position=1)
    [first] = lifecycle.snapshot(state)
    assert first.kind is EventKind.QUEUED and first.data == {"queue_position": 1, "position": 2}
    state, _ = lifecycle.start(state, now=T0, total=5)
    assert [e.kind for e in lifecycle.snapshot(state)] == [EventKind.RUNNING]
    state, _ = lifecycle.step(state, 2, 5)
    running, progress = lifecycle.snapshot(state)
    assert running.kind is EventKind.RUNNING and progress.data == {"step": 2, "total": 5}
    assert progress.seq == state.seq
    done, _ = lifecycle.succeed(state, now=T0, images=[IMAGE])
    [terminal] = lifecycle.snapshot(done)
    assert terminal.kind is EventKind.SUCCEEDED and terminal.data["images"][0]["seed"] == 7


def test_a_watcher_is_told_each_event_once_and_stops_at_the_end() -> None:
    queued, _ = lifecycle.submit("job_a", now=T0, position=0)
    running, started = lifecycle.start(queued, now=T0, total=2)
    stepped, step = lifecycle.step(running, 1, 2)
    done, succeeded = lifecycle.succeed(stepped, now=T0, images=[IMAGE])
    watch = lifecycle.Watch()
    assert [e.kind for e in watch.start(running)] == [EventKind.RUNNING]
    assert watch.event(started) == []  # in the snapshot already
    assert watch.event(step) == [step] and watch.event(step) == []
    assert watch.reread(stepped) == [] and not watch.done  # nothing lost
    assert watch.reread(done) == lifecycle.snapshot(done) and watch.done  # a lost message
    assert watch.event(succeeded) == []  # told by the re-read
    late = lifecycle.Watch()
    late.start(done)
    assert late.done and late.event(succeeded) == []


def test_records_and_messages_round_trip() -> None:
    state, events = run_to_success()
    state = lifecycle.JobState(**{**state.__dict__, "webhook": "https://example.com/hook"})
    assert lifecycle.JobState.from_record(state.to_record()) == state
    for event in events:
        assert lifecycle.JobEvent.from_message(event.to_message()) == event
    frame = events[3].to_sse()
    assert frame.startswith("id: 4\nevent: progress\ndata: {") and frame.endswith("\n\n")


def test_the_arm_is_recorded_and_answered_in_the_synchronous_shape() -> None:
    assigned = Assignment("impressionist-filter", "ink", "realistic-ink", subject="user:7")
    state, _ = lifecycle.submit("job_a", now=T0, position=0, experiment=assigned.served())
    record = state.to_record()
    assert "user:7" not in record  # the subject stays out of the store
    assert lifecycle.JobState.from_record(record) == state
    assert state.experiment == ServedArm("impressionist-filter", "ink", "realistic-ink")
    shape = {"name": "impressionist-filter", "arm": "ink", "preset": "realistic-ink"}
    assert http_views.submit_json(state)["experiment"] == shape == arm_json(assigned)
    assert http_views.job_json(state)["experiment"] == shape
    # A record written before jobs named their arm reads back without one.
    plain, _ = lifecycle.submit("job_b", now=T0, position=0)
    old = json.loads(plain.to_record())
    del old["experiment"]
    assert lifecycle.JobState.from_record(json.dumps(old)) == plain
    assert plain.experiment is None and http_views.job_json(plain)["experiment"] is None


def test_webhook_filters() -> None:
    assert lifecycle.parse_events_filter(None) == {"completed"}
    assert lifecycle.parse_events_filter(["start", "progress"]) == {"start", "progress"}
    with pytest.raises(ValueError, match="'done'"):
        lifecycle.parse_events_filter(["done"])
    assert lifecycle.webhook_filter_of(EventKind.QUEUED) is None
    assert lifecycle.webhook_filter_of(EventKind.RUNNING) == "start"
    assert lifecycle.webhook_filter_of(EventKind.PROGRESS) == "progress"
    assert {lifecycle.webhook_filter_of(k) for k in EventKind if k.terminal} == {"completed"}


def test_ids_are_url_safe_and_distinct() -> None:
    ids = {lifecycle.new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("job_") and i[4:].isalnum() for i in ids)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("respond-async", True),
        ("Respond-Async", True),
        ("wait=10, respond-async", True),
        ("respond-async; foo=bar", True),
        ("return=minimal", False),
        ("respond-asynchronously", False),
    ],
)
def test_prefer_respond_async(header: str | None, expected: bool) -> None:
    assert http_views.wants_async(header) is expected


async def test_sse_frames_keep_an_idle_stream_alive_and_end_after_the_terminal_event() -> None:
    import asyncio

    state, queued = lifecycle.submit("job_a", now=T0, position=0)
    queue: asyncio.Queue[lifecycle.JobEvent | None] = asyncio.Queue()

    async def events():  # type: ignore[no-untyped-def]
        while (event := await queue.get()) is not None:
            yield event

    frames = http_views.sse_frames(events(), keepalive=0.05)
    await queue.put(queued)
    assert (await anext(frames)).startswith("id: 1\nevent: queued\n")
    # Nothing for a while: comment frames, and the pending read is not lost.
    assert await anext(frames) == http_views.KEEPALIVE_FRAME
    state, canceled = lifecycle.cancel(state, now=T0)
    assert canceled is not None
    await queue.put(canceled)
    await queue.put(None)
    rest = [frame async for frame in frames]
    assert [f for f in rest if f != http_views.KEEPALIVE_FRAME] == [canceled.to_sse()]

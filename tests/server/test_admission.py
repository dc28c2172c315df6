"""The one way in, shared by generate, edit and VQA, with the real key store, safety
filter and audit log (no model: admission runs before anything is queued)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from flux_server.admission import keys
from flux_server.admission.audit_ecs import parse_line
from flux_server.admission.gate import Admission
from flux_server.errors import ContentRejected, DeadlineExceeded, Unauthenticated, Unavailable
from flux_server.metrics import Metrics
from flux_server.requests.context import CallContext
from flux_server.settings import ServerSettings


def new_key(path: Path, user: str, *flags: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, *flags, "--file", str(path)]) == 0
    return out.getvalue().strip()


async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Admission, Path, dict[str, str]]:
    key_file = tmp_path / "keys"
    users = {"alice": new_key(key_file, "alice"), "boss": new_key(key_file, "boss", "--priority")}
    audit = tmp_path / "audit.jsonl"
    settings = ServerSettings.model_validate(
        {"model": "unused", "api_keys": key_file, "audit_log": str(audit)}
    )
    admission = Admission.from_settings(settings, Metrics(), inline)
    return admission, audit, users


def lines(audit: Path) -> list[dict[str, Any]]:
    return [parse_line(line) for line in audit.read_text().splitlines()]


def bearer(key: str, priority: bool = False) -> CallContext:
    return CallContext("rest:/generate", authorization=f"Bearer {key}", priority=priority)


async def attempt(admission: Admission, ctx: CallContext, text: str = "a heron") -> Any:
    async with admission.request(ctx, prompt=text) as trail:
        admission.admit(trail)
        await admission.screen(trail, text, "question")
        return trail


async def test_nothing_is_admitted_while_loading_or_draining(setup: Any) -> None:
    admission, audit, users = setup
    with pytest.raises(Unavailable, match="loading"):
        await attempt(admission, bearer(users["alice"]))
    admission.loaded = True
    admission.draining = True
    with pytest.raises(Unavailable, match="draining"):
        await attempt(admission, bearer(users["alice"]))
    assert [r["reason"] for r in lines(audit)] == ["unavailable", "unavailable"]


async def test_keys_lanes_and_the_content_policy_in_order(setup: Any) -> None:
    admission, audit, users = setup
    admission.loaded = True
    with pytest.raises(Unauthenticated) as missing:
        await attempt(admission, CallContext("grpc:VQA"), text="nude")
    assert missing.value.field == "authorization"  # the key is checked before the prompt

    trail = await attempt(admission, bearer(users["alice"], priority=True))
    assert (trail.user, trail.ctx.priority, trail.ctx.priority_denied) == ("alice", False, True)
    trail = await attempt(admission, bearer(users["boss"], priority=True))
    assert (trail.user, trail.ctx.priority) == ("boss", True)

    with pytest.raises(ContentRejected) as refused:
        await attempt(admission, bearer(users["alice"]), text="a nude statue")
    assert refused.value.field == "question"
    records = lines(audit)
    # One line per refusal, the content policy's with what matched; none for admissions
    # (the line of a served request is written when it is served).
    assert [(r.get("user"), r["reason"]) for r in records] == [
        (None, "unauthenticated"),
        ("alice", "blocklist"),
    ]
    assert records[1]["prompt"] == "a nude statue" and records[1]["detail"]


async def test_the_admission_line_has_no_status_and_a_failure_has_the_outcome(
    setup: Any,
) -> None:
    # The line written when a request is admitted comes before its answer: it says
    # "accepted", not a status it cannot know; an error after it gets the final line.
    admission, audit, users = setup
    admission.loaded = True
    served = await attempt(admission, bearer(users["alice"]))
    admission.accepted(served)
    with pytest.raises(DeadlineExceeded):
        async with admission.request(bearer(users["alice"]), prompt="a heron") as trail:
            admission.admit(trail)
            admission.accepted(trail)
            raise DeadlineExceeded("the request timed out")
    first, second, failed = lines(audit)
    assert (first["decision"], first["outcome"]) == ("accepted", "accepted")
    assert "status" not in first and "status" not in second
    assert second["outcome"] == "accepted"
    assert failed["request_id"] == second["request_id"]
    assert (failed["decision"], failed["outcome"]) == ("rejected", "failed")
    assert failed["status"] == 504 and failed["reason"] == "deadline_exceeded"


async def test_the_cache_answers_a_stored_request(tmp_path: Path) -> None:
    settings = ServerSettings.model_validate({"model": "unused"})
    admission = Admission.from_settings(settings, Metrics(), inline)
    from flux_server.requests.params import GenerateParams, resolve
    from flux_server.requests.results import GeneratedImage

    job = resolve(GenerateParams.model_validate({"prompt": "a heron", "seed": 1}), {}, settings, {})
    key = admission.cache_key(job, seeded=True, adapter_versions={})
    assert await admission.lookup(key) is None
    image = GeneratedImage(data=b"png", format="png", width=64, height=64, seed=1)
    await admission.store(key, [image])
    assert await admission.lookup(key) == [image]
    assert admission.cache_key(job, seeded=False, adapter_versions={}) != key
    await admission.close()

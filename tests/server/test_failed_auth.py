"""Failed authentication is throttled per address and audited in aggregate, against a
real server: 1,000 wrong keys from one address get a handful of 401s and then 429 with
Retry-After, the audit log has a bounded number of lines whose counts add up to exactly
1,000, and the audit volume's free space is a metric and a /readyz warning.

Before: 1,000 x 401 and 1,000 audit lines (~270 B each), so an unauthenticated client
could fill the disk of a fail-closed audit log and stop all serving.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, add_key

from flux_client.wire import pb, pb_grpc
from flux_server.admission.audit_ecs import parse_line
from flux_server.admission.auth_failures import FailedAuthAudit, FailureThrottle, address_key
from flux_server.requests.context import CallContext

BURST = 5
INTERVAL = 1.0
WRONG = 1_000


@pytest.fixture(scope="module")
def throttled(
    server_factory: Any, tiny_model_dir: Path, tmp_path_factory: Any
) -> tuple[ServerProcess, Path, str]:
    directory = tmp_path_factory.mktemp("auth")
    key_file, audit = directory / "keys", directory / "audit" / "audit.log"
    key = add_key(key_file)
    server: ServerProcess = server_factory(
        tiny_model_dir,
        [
            "--api-keys", str(key_file),
            "--audit-log", str(audit),
            "--failed-auth-burst", str(BURST),
            "--failed-auth-rate", "0.5",
            "--audit-failed-auth-interval", str(INTERVAL),
            # More than any disk here has free: /readyz must warn.
            "--audit-min-free-bytes", str(1 << 60),
        ],
    )  # fmt: skip
    return server, audit, key


def _audit_lines(path: Path) -> list[dict[str, Any]]:
    """The audit lines (ECS documents) under the record's own field names."""
    text = path.read_text() if path.exists() else ""
    return [parse_line(line) for line in text.splitlines()]


def test_a_thousand_wrong_keys_are_throttled_with_a_bounded_exact_audit(
    throttled: tuple[ServerProcess, Path, str],
) -> None:
    server, audit, key = throttled
    codes: dict[int, int] = {}
    retry_after = set()
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for index in range(WRONG):
            response = client.get(
                f"/jobs/j{index}", headers={"Authorization": f"Bearer wrong-{index}"}
            )
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
            if response.status_code == 429:
                retry_after.add(response.headers.get("retry-after"))
                assert response.json()["error"]["code"] == "resource_exhausted"
        # While throttled, even the right key waits: the address tries no key.
        assert client.get("/jobs/x", headers={"Authorization": f"Bearer {key}"}).status_code == 429
    elapsed = time.monotonic() - started
    # A few tokens come back while the loop runs (0.5 a second).
    assert 401 in codes and codes[401] <= BURST + math.ceil(elapsed * 0.5) + 1, codes
    assert codes.get(429, 0) >= WRONG - codes[401], codes
    assert retry_after and None not in retry_after and all(int(v) >= 1 for v in retry_after)

    # gRPC from the same address: throttled as well, with RESOURCE_EXHAUSTED.
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetJob(pb.JobRequest(id="x"), metadata=[("authorization", "Bearer nope")])
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Behind a local proxy (a mesh sidecar), the caller is x-forwarded-for's: another
        # address, with a bucket of its own.
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetJob(
                pb.JobRequest(id="x"),
                metadata=[("authorization", "Bearer nope"), ("x-forwarded-for", "203.0.113.9")],
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Every failure is counted exactly; the lines are one per address per interval.
    expected = WRONG + 3  # the right key while throttled, and the two gRPC calls
    deadline = time.monotonic() + INTERVAL * 5 + 10
    while sum(line.get("count", 0) for line in _audit_lines(audit)) < expected:
        assert time.monotonic() < deadline, _audit_lines(audit)[-3:]
        time.sleep(0.1)
    lines = [line for line in _audit_lines(audit) if line.get("reason") == "unauthenticated"]
    assert sum(line["count"] for line in lines) == expected
    # Per address and interval: the first at once, the rest summed up in one line.
    intervals = math.ceil((time.monotonic() - started) / INTERVAL) + 1
    assert len(lines) <= 2 * 2 * intervals, len(lines)
    assert {line["client"] for line in lines} == {"127.0.0.1", "203.0.113.9"}


def test_the_audit_volume_is_watched(throttled: tuple[ServerProcess, Path, str]) -> None:
    server, _, _ = throttled
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    free = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fluxserve_audit_free_bytes"
    ]
    assert free and 0 < free[0] < 1 << 60
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200  # a warning, not a refusal
    assert "--audit-min-free-bytes" in ready.json()["warnings"][0]


def test_the_bucket_refills_and_counts_ipv6_by_prefix() -> None:
    now = [0.0]
    throttle = FailureThrottle(burst=3, per_second=0.5, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(2.0)
    assert throttle.retry_after("10.0.0.2") is None  # per address
    now[0] = 2.0
    assert throttle.retry_after("10.0.0.1") is None
    # One host's /64 is one address: rotating the low bits does not escape.
    for suffix in range(3):
        throttle.failed(f"2001:db8::{suffix + 1}")
    assert throttle.retry_after("2001:db8::ffff") is not None
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"


def test_the_throttle_forgets_the_least_recent_address_first() -> None:
    throttle = FailureThrottle(burst=1, per_second=0.001, max_addresses=2)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        throttle.failed(address)
    assert throttle.retry_after("10.0.0.1") is None  # forgotten: memory stays bounded
    assert throttle.retry_after("10.0.0.3") is not None


def test_the_aggregate_is_exact_per_address() -> None:
    written = []
    audit = FailedAuthAudit(written.append, interval=60)
    for index in range(1_000):
        audit.note(
            CallContext("rest:/generate", f"r{index}", client="10.0.0.1"), throttled=index > 9
        )
    audit.note(CallContext("grpc:Generate", "g", client="10.0.0.2"), throttled=False)
    # The first of each address at once (a single mistyped key is one line, as before).
    assert [(r.client, r.count, r.request_id) for r in written] == [
        ("10.0.0.1", 1, "r0"),
        ("10.0.0.2", 1, "g"),
    ]
    audit.flush()  # the interval's end: one summary for the rest (here no loop: by hand)
    assert len(written) == 3
    summary = written[2]
    assert (summary.client, summary.count, summary.request_id) == ("10.0.0.1", 999, "r1")
    assert "990 throttled" in (summary.detail or "") and "r999" in (summary.detail or "")
    assert sum(r.count or 0 for r in written) == 1_001
    audit.flush()  # nothing new: no line
    assert len(written) == 3

"""With API keys an async job is its submitter's: another key's user is answered as for
an unknown id on every job route, over REST and gRPC (a real server with a keys file);
the submitter reads, watches, fetches and cancels it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from server_process import ServerProcess, start_server

from flux_client.wire import pb, pb_grpc
from flux_server.admission import keys

ASYNC = {"Prefer": "respond-async"}


def _new_key(path: Path, user: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, "--file", str(path)]) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def keyed(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str, str]]:
    root = tmp_path_factory.mktemp("owners")
    keys_file = root / "keys"
    alice, bob = _new_key(keys_file, "alice"), _new_key(keys_file, "bob")
    server = start_server(tiny_flux_dir, root, ["--api-keys", str(keys_file)])
    try:
        server.wait_ready()
        yield server, alice, bob
    finally:
        server.stop()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _finished(server: ServerProcess, job_id: str, key: str) -> dict[str, Any]:
    with httpx.stream(
        "GET", f"{server.url}/jobs/{job_id}/events", headers=_auth(key), timeout=120
    ) as events:
        assert events.status_code == 200
        for _ in events.iter_lines():
            pass
    job: dict[str, Any] = httpx.get(f"{server.url}/jobs/{job_id}", headers=_auth(key)).json()
    return job


def test_another_users_job_is_answered_as_unknown_over_rest(
    keyed: tuple[ServerProcess, str, str],
) -> None:
    server, alice, bob = keyed
    submitted = httpx.post(
        f"{server.url}/generate",
        json={"prompt": "a lighthouse", "steps": 2, "seed": 3},
        headers={**ASYNC, **_auth(alice)},
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    done = _finished(server, job_id, alice)
    assert done["status"] == "succeeded"
    image = httpx.get(f"{server.url}/jobs/{job_id}/images/0", headers=_auth(alice))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    unknown = httpx.get(f"{server.url}/jobs/{'0' * 22}", headers=_auth(bob)).json()
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/events"),
        ("GET", f"/jobs/{job_id}/images/0"),
        ("POST", f"/jobs/{job_id}/cancel"),
    ):
        answer = httpx.request(method, f"{server.url}{path}", headers=_auth(bob))
        assert answer.status_code == 404, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "unknown_id" and error["field"] == "id"
        # Word for word what an id nobody has gets: the job's existence is not told.
        assert error["message"] == unknown["error"]["message"].replace("0" * 22, job_id)
    # No key at all: 401, as on every route.
    assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 401


def test_another_users_job_is_not_found_over_grpc(
    keyed: tuple[ServerProcess, str, str],
) -> None:
    server, alice, bob = keyed
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        as_alice = (("authorization", f"Bearer {alice}"),)
        as_bob = (("authorization", f"Bearer {bob}"),)
        params = pb.GenerationParams(prompt="a red door", steps=30, seed=4)
        job = stub.Submit(pb.GenerateRequest(params=params), metadata=as_alice, timeout=60)
        for call in (stub.GetJob, stub.CancelJob):
            with pytest.raises(grpc.RpcError) as refused:
                call(pb.JobRequest(id=job.id), metadata=as_bob, timeout=60)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.WatchJob(pb.JobRequest(id=job.id), metadata=as_bob, timeout=60))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        # Bob's cancel did nothing; alice's reaches her job (cancelled, unless it
        # finished first: a cancel leaves a finished job as it was).
        before = stub.GetJob(pb.JobRequest(id=job.id), metadata=as_alice, timeout=60)
        assert before.status != "canceled"
        after = stub.CancelJob(pb.JobRequest(id=job.id), metadata=as_alice, timeout=60)
        assert after.status == ("succeeded" if before.status == "succeeded" else "canceled")

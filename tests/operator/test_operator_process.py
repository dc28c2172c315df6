"""`python -m flux_operator` as a user runs it: its own process, a kubeconfig, liveness on
/healthz, Elastic Common Schema logs naming the object, a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from conftest import Cluster, base_spec
from ecs_mappings import flat, line_problems


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_operator_process_serves_health_reconciles_and_stops(
    cluster: Cluster, kubeconfig: Path, tmp_path: Path
) -> None:
    port = _free_port()
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flux_operator",
            "--kubeconfig",
            str(kubeconfig),
            "--health-port",
            str(port),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:

            async def healthy() -> bool:
                try:
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"http://127.0.0.1:{port}/healthz") as resp,
                    ):
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            assert await cluster.wait_for(healthy, "/healthz", timeout=60)
            await cluster.create_fd("flux-dev", base_spec())
            assert await cluster.wait_for(
                lambda: cluster.get("Deployment", "flux-dev"), "the Deployment"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0
    # Every line is an ECS document the index template of deploy/elk takes whole, kopf's
    # own included; the reconciliation's events name the object, the event and the release.
    text = log_path.read_text()
    problems = {line[:160]: p for line in text.splitlines() if (p := line_problems(line))}
    assert not problems, json.dumps(problems, indent=1)
    lines = [flat(json.loads(line)) for line in text.splitlines()]
    assert {r["service.name"] for r in lines} == {"fluxserve-operator"}
    assert {r["event.dataset"] for r in lines} == {"fluxserve.operator"}
    started = [r for r in lines if str(r.get("message", "")).startswith("RolloutStarted")]
    assert started, text
    assert started[0]["orchestrator.namespace"] == "studio"
    assert started[0]["orchestrator.resource.name"] == "flux-dev"
    assert (started[0]["event.action"], started[0]["event.outcome"]) == (
        "RolloutStarted",
        "success",
    )
    assert started[0]["fluxserve.release"] == "v1.4.1"
    kopf_lines = [r for r in lines if str(r["log.logger"]).startswith("kopf.objects")]
    assert kopf_lines and kopf_lines[0]["orchestrator.resource.type"] == "fluxdeployment"

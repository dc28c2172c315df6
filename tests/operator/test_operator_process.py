"""`python -m flux_operator` as a user runs it: its own process, a kubeconfig, liveness on
/healthz, JSON logs naming the object, a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from conftest import Cluster, base_spec


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
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    started = [r for r in lines if str(r.get("message", "")).startswith("RolloutStarted")]
    assert started and started[0]["object"] == "studio/flux-dev"

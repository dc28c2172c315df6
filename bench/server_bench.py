"""The server's benchmark (``make bench``), on a random FLUX big enough that compute
dominates on a CPU (``python -m flux_server.tiny_model --size bench``: 2 double-stream
+ 4 single-stream blocks, 4 heads of 48, 16 latent channels, 4-block VAE, 64-wide CLIP
and T5 of 2 layers; about 5M transformer parameters; T5 pads prompts to 512 tokens as
for FLUX.1-dev).

(a) Per-image latency, one request at a time: the pipeline called in-process versus
    through REST and through gRPC -- the serving overhead as a ratio. Beside the wall
    time, the CPU seconds the generating process spent on each image (psutil): on a
    shared machine other work inflates wall times at random, CPU time much less.
    Both batching policies (``--max-batch-size 4 --max-delay-ms 50``) side by side:
    ``--batch-wait always`` (a lone request waits the delay for company) and
    ``when-busy`` (it runs at once when the engine is idle).
(b) 16 concurrent clients, each sending its requests one after another: batching off
    (``--max-batch-size 1``) and on with each policy: images/s and p50/p95 latency,
    and the mean batch size. A burst that reaches an idle engine all at once starts
    with one small call under ``when-busy`` (its first request runs at once); the
    closed loop counts that start with the steady state that follows.

Timings depend on the machine and its load; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import grpc
import httpx
import psutil

from flux_contract.wire import pb, pb_grpc

SIZE, STEPS = 256, 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m flux_server`` in a child process, on free ports."""

    def __init__(
        self, model: Path, log: Path, args: Sequence[str], threads: int | None = None
    ) -> None:
        """``threads``: torch's CPU threads (``OMP_NUM_THREADS``); default, one a core."""
        self.http_port, self.grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
        env["HF_HUB_OFFLINE"] = "1"
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flux_server",
                    "--model",
                    str(model),
                    "--host",
                    "127.0.0.1",
                    "--http-port",
                    str(self.http_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--metrics-port",
                    "0",
                    "--cache-bytes",
                    "0",
                    "--max-queue",
                    "256",
                    # A loaded machine must slow the bench down, not fail it.
                    "--request-timeout",
                    "7200",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.url = f"http://127.0.0.1:{self.http_port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"server exited: {log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        sys.exit("server not ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time a process has used so far (its threads, not children)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def body(seed: int) -> dict[str, object]:
    return {
        "prompt": f"a city at dusk {seed}",
        "width": SIZE,
        "height": SIZE,
        "steps": STEPS,
        "seed": seed,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class InProcess:
    """The engine called directly, from one worker thread as the server does."""

    def __init__(self, model: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from flux_server.execution.engine import Engine
        from flux_server.settings import ServerSettings

        self.executor = ThreadPoolExecutor(max_workers=1)
        self.engine = self.executor.submit(Engine.load, str(model), None, "cpu").result()
        self.settings = ServerSettings(model=str(model))
        self.executor.submit(self.engine.warmup).result()

    def once(self, seed: int) -> float:
        from flux_server.requests.params import GenerateParams, resolve
        from flux_server.requests.results import GeneratedImage

        job = resolve(GenerateParams.model_validate(body(seed)), {}, self.settings)

        def generate() -> list[GeneratedImage]:
            # Includes PNG encoding, as the server's answer does.
            [pictures] = self.engine.generate([job.text_to_image()])
            return [GeneratedImage.encoded(p.image, job.output_format, p.seed) for p in pictures]

        started = time.perf_counter()
        self.executor.submit(generate).result()
        return time.perf_counter() - started


def rest_once(client: httpx.Client, seed: int) -> float:
    started = time.perf_counter()
    client.post("/generate", json=body(seed)).raise_for_status()
    return time.perf_counter() - started


def grpc_once(stub: pb_grpc.FluxServiceStub, seed: int) -> float:
    request = pb.GenerateRequest(
        params=pb.GenerationParams(
            prompt=f"a city at dusk {seed}", width=SIZE, height=SIZE, steps=STEPS, seed=seed
        )
    )
    started = time.perf_counter()
    stub.Generate(request, timeout=600)
    return time.perf_counter() - started


def sequential(
    model: Path, servers: dict[str, Server], reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every path taken in turn, so a change in the machine's load hits all of them.
    Returns wall seconds and CPU seconds (of the process that generated) per path."""
    direct = InProcess(model)
    me = psutil.Process()
    paths: dict[str, tuple[psutil.Process, Callable[[int], float]]] = {
        "in-process": (me, direct.once)
    }
    clients: list[httpx.Client] = []
    for label, server in servers.items():
        client = httpx.Client(base_url=server.url, timeout=600)
        clients.append(client)
        stub = pb_grpc.FluxServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        rest_once(client, 999)  # connections and first calls
        grpc_once(stub, 999)
        served = psutil.Process(server.process.pid)
        paths[f"REST {label}"] = (served, partial(rest_once, client))
        paths[f"gRPC {label}"] = (served, partial(grpc_once, stub))
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(reps):
        for name, (process, call) in paths.items():
            before = cpu_seconds(process)
            times[name].append(call(i))
            cpu[name].append(cpu_seconds(process) - before)
    for client in clients:
        client.close()
    direct.executor.shutdown()
    return times, cpu


async def concurrent(
    server: Server, clients: int, per_client: int
) -> tuple[float, list[float], list[int]]:
    """``clients`` clients, each sending ``per_client`` requests one after another (a
    closed loop, as users waiting for their images do): images/s over the whole run,
    each request's latency and batch size."""
    async with httpx.AsyncClient(
        base_url=server.url, timeout=1200, headers={"Accept": "application/json"}
    ) as client:
        await client.post("/generate", json=body(999))
        latencies: list[float] = []
        batches: list[int] = []

        async def user(number: int) -> None:
            for k in range(per_client):
                started = time.perf_counter()
                response = await client.post("/generate", json=body(number * 1000 + k))
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
                batches.append(int(response.json()["batch_size"]))

        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(clients)))
        wall = time.perf_counter() - started
    return clients * per_client / wall, latencies, batches


def print_sequential(times: dict[str, list[float]], cpu: dict[str, list[float]], reps: int) -> None:
    base = statistics.median(times["in-process"])
    cpu_base = statistics.median(cpu["in-process"])
    print()
    print("(a) per-image latency, sequential (median of", reps, "runs)")
    best = min(times["in-process"])
    print(
        f"    {'path':<20}{'median s':>10}{'ratio':>9}{'min s':>9}{'ratio':>9}"
        f"{'CPU s':>9}{'ratio':>9}"
    )
    for name, samples in times.items():
        median, fastest = statistics.median(samples), min(samples)
        cpu_median = statistics.median(cpu[name])
        print(
            f"    {name:<20}{median:>10.3f}{median / base:>8.3f}x"
            f"{fastest:>9.3f}{fastest / best:>8.3f}x"
            f"{cpu_median:>9.3f}{cpu_median / cpu_base:>8.3f}x"
        )


Rounds = dict[str, list[tuple[float, list[float], list[int]]]]
"""Per batching mode, each round's (images/s, latencies, batch sizes)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="fluxserve server benchmark")
    parser.add_argument("--reps", type=int, default=9, help="sequential requests per path")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument(
        "--requests-per-client", type=int, default=4, help="requests each client sends in (b)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (b), alternating")
    return parser.parse_args()


def concurrent_rounds(servers: dict[str, Server], args: argparse.Namespace) -> Rounds:
    """(b) ``--rounds`` times. Rounds alternate between the servers (the others idle while
    one works), so a change in the machine's load hits them all."""
    rounds: Rounds = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, server in servers.items():
            rounds[name].append(
                asyncio.run(concurrent(server, args.clients, args.requests_per_client))
            )
    return rounds


def print_concurrent(rounds: Rounds, args: argparse.Namespace) -> None:
    print()
    print(
        f"(b) {args.clients} concurrent clients over REST, {args.requests_per_client} requests each"
    )
    print(f"    {'batching':<22}{'images/s':>10}{'p50 s':>9}{'p95 s':>9}{'mean batch':>12}")
    rates = {}
    for mode, results in rounds.items():
        rates[mode] = statistics.median(r[0] for r in results)
        latencies = [x for r in results for x in r[1]]
        print(
            f"    {mode:<22}{rates[mode]:>10.3f}{percentile(latencies, 0.5):>9.2f}"
            f"{percentile(latencies, 0.95):>9.2f}"
            f"{statistics.mean(b for r in results for b in r[2]):>12.2f}"
        )
    off = rates["off (max-batch 1)"]
    print(
        f"    throughput ratio to off: wait always {rates['wait always'] / off:.2f}x, "
        f"when-busy {rates['when-busy'] / off:.2f}x; when-busy / wait always "
        f"{rates['when-busy'] / rates['wait always']:.2f}x"
    )
    print(
        f"    (median images/s over {args.rounds} alternating rounds; load average now "
        f"{os.getloadavg()[0]:.2f})"
    )


def main() -> int:
    args = parse_args()

    from flux_server.tools.tiny_model import write_tiny_flux

    with tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as tmp:
        work = Path(tmp)
        model = write_tiny_flux(work / "model", size="bench")
        print(
            f"random FLUX (bench size), {SIZE}x{SIZE}, {STEPS} steps, CPU, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
        )

        common = ["--max-batch-size", "4", "--max-delay-ms", "50"]
        servers = {
            "off (max-batch 1)": Server(
                model, work / "a.log", ["--max-batch-size", "1", "--max-delay-ms", "0"]
            ),
            "wait always": Server(model, work / "b.log", [*common, "--batch-wait", "always"]),
            "when-busy": Server(model, work / "c.log", [*common, "--batch-wait", "when-busy"]),
        }
        batching = {k: v for k, v in servers.items() if k != "off (max-batch 1)"}
        try:
            times, cpu = sequential(model, batching, args.reps)
            print_sequential(times, cpu, args.reps)  # now: (b) takes long on a busy machine
            rounds = concurrent_rounds(servers, args)
        finally:
            for server in servers.values():
                server.stop()

    print_concurrent(rounds, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

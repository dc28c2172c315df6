"""What the SDK adds to a call: p50/p95 per call through FluxModelClient against the
generated stub / plain httpx, on the fake servers (64x64 PNG, no model), both transports.

    .venv/bin/python tests/client/sdk_overhead.py [--calls 300]

Not a test (no timing assertions on a shared machine): a measurement to read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).parent))

from wire_fakes import running_fake_servers

from flux_client import FluxModelClient
from flux_client.wire import pb, pb_grpc


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(20):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (calls - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    calls = parser.parse_args(argv).calls
    rows: list[tuple[str, tuple[float, float]]] = []
    with running_fake_servers() as fakes:
        grpc_port, http_port = fakes.grpc_port, fakes.http_port
        with FluxModelClient(host="127.0.0.1", port=grpc_port, transport="grpc") as client:
            rows.append(
                ("SDK gRPC", measure(lambda: client.generate_images("a cat", seed=1), calls))
            )
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.FluxServiceStub(channel)
            request = pb.GenerateRequest(params=pb.GenerationParams(prompt="a cat", seed=1))
            rows.append(("stub gRPC", measure(lambda: stub.Generate(request, timeout=30), calls)))
        with FluxModelClient(host="127.0.0.1", port=http_port, transport="http") as client:
            rows.append(
                ("SDK REST", measure(lambda: client.generate_images("a cat", seed=1), calls))
            )
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}") as plain:
            body = {"prompt": "a cat", "seed": 1}
            accept = {"Accept": "application/json"}
            rows.append(
                (
                    "httpx REST",
                    measure(
                        lambda: plain.post("/generate", json=body, headers=accept).json(), calls
                    ),
                )
            )
    print(
        f"{'per call':12s} {'p50 ms':>8s} {'p95 ms':>8s}   ({calls} calls, 64x64 PNG, fake servers)"
    )
    for name, (p50, p95) in rows:
        print(f"{name:12s} {p50:8.2f} {p95:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

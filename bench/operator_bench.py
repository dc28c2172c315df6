"""Operator benchmark: create N FluxDeployments against the Kubernetes API emulator and
measure how long until each one's children exist, how many API requests the operator made
per resource (by verb), and the CPU each process used.

    .venv/bin/python bench/operator_bench.py [--count 200] [--rate 0]

Three processes: this driver, the emulator (kmock's KubernetesEmulator over HTTP,
bench/operator_emulator.py, started as ``operator_bench.py --emulator``) and the operator
(``python -m flux_operator``, exactly as deployed). Apart, the CPU seconds of the API
stand-in and of the operator are measured separately: on a real cluster the first is
kube-apiserver's load, the second ours.

``--rate R`` creates R resources a second (steady creation: the time to children is then
what one resource waits); the default creates them all at once (a burst: every resource
waits for the whole burst's work). Time-to-children of a FluxDeployment runs from just
before its POST to the creation of the last of its children (Deployment, Service, HPA,
presets ConfigMap), as recorded by the emulator (both processes read the same
system-wide monotonic clock). The requests are
counted at the emulator, from the first POST until the operator has been quiet for
``--settle`` seconds after the last resource was served; the driver's own requests (its
POSTs and its polling) carry their own User-Agent and are not counted. Peak RSS is the
operator process's VmHWM from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from operator_emulator import DRIVER_AGENT, STATS_PATH, serve_emulator

NAMESPACE = "bench"


def _spec(i: int) -> dict[str, Any]:
    return {
        "release": "v1.0.0",
        "image": "ghcr.io/acme/fluxserve-server",
        "model": {"id": "black-forest-labs/FLUX.1-dev", "source": {"pvc": {"claimName": "w"}}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
        "stylePresets": {"style": {"promptTemplate": "{prompt}, style " + str(i)}},
    }


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
                "current-context": "e",
            }
        )
    )
    return path


async def _poll(
    session: aiohttp.ClientSession, url: str, check: Any, timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(url + STATS_PATH) as resp:
            stats: dict[str, Any] = await resp.json()
        if check(stats):
            return stats
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}: {stats}")
        await asyncio.sleep(0.2)


async def _settled(session: aiohttp.ClientSession, url: str, settle: float) -> None:
    """Return once the operator has made no request for ``settle`` seconds."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < settle:
        async with session.get(url + STATS_PATH) as resp:
            requests = (await resp.json())["requests"]
        if requests != last:
            last, since = requests, time.monotonic()
        await asyncio.sleep(0.2)


async def _create_all(
    session: aiohttp.ClientSession, url: str, count: int, rate: float
) -> dict[str, float]:
    """POST ``count`` FluxDeployments, ``rate`` a second (0: as fast as they are taken)."""
    collection = f"{url}/apis/fluxserve.dev/v1alpha1/namespaces/{NAMESPACE}/fluxdeployments"
    started: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(count):
        if rate > 0:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        name = f"fxd-{i:04d}"
        body = {
            "apiVersion": "fluxserve.dev/v1alpha1",
            "kind": "FluxDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": _spec(i),
        }
        started[name] = time.monotonic()
        async with session.post(collection, json=body) as resp:
            resp.raise_for_status()
    return started


async def _measure(
    url: str, operator: asyncio.subprocess.Process, emulator_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    headers = {"User-Agent": DRIVER_AGENT}
    async with aiohttp.ClientSession(headers=headers) as session:
        # The operator watches FluxDeployments before the burst (kopf lists, then watches).
        await _poll(
            session, url, lambda s: "fluxdeployments" in s["watching"], 60, "the operator's watch"
        )
        await _settled(session, url, 1.0)
        async with session.get(url + STATS_PATH, params={"full": "1"}) as resp:
            before = await resp.json()
        cpu0 = (_cpu_seconds(operator.pid), _cpu_seconds(emulator_pid))
        t_burst = time.monotonic()
        started = await _create_all(session, url, args.count, args.rate)
        await _poll(session, url, lambda s: s["done"] >= args.count, args.timeout, "every child")
        await _settled(session, url, args.settle)
        cpu1 = (_cpu_seconds(operator.pid), _cpu_seconds(emulator_pid))
        wall = time.monotonic() - t_burst
        async with session.get(url + STATS_PATH, params={"full": "1"}) as resp:
            stats = await resp.json()
    latencies = sorted(stats["done_at"][name] - t for name, t in started.items())
    by_verb: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for sign, counts in ((-1, before["counts"]), (1, stats["counts"])):
        for verb, plural, n in counts:
            by_verb[verb] += sign * n
            by_kind[f"{verb} {plural}"] += sign * n
    total = stats["requests"] - before["requests"]
    return {
        "count": args.count,
        "rate": args.rate,
        "latencies": latencies,
        "all_s": max(stats["done_at"][name] for name in started) - t_burst,
        "wall_s": wall,
        "requests": total,
        "by_verb": by_verb,
        "by_kind": by_kind,
        "operator_cpu_s": cpu1[0] - cpu0[0],
        "emulator_cpu_s": cpu1[1] - cpu0[1],
        "peak_rss_mib": _peak_rss_mib(operator.pid),
    }


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=20)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    emulator = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--emulator",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert emulator.stdout is not None and emulator.stdin is not None
    try:
        url = (await asyncio.wait_for(emulator.stdout.readline(), 30)).decode().strip().rstrip("/")
        if not url:
            raise SystemExit("the emulator did not start")
        kubeconfig = _kubeconfig(workdir / "kubeconfig", url)
        with (workdir / "operator.log").open("w") as log:
            command = ["-m", "flux_operator", f"--kubeconfig={kubeconfig}", "--health-port=0"]
            operator = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                return await _measure(url, operator, emulator.pid, args)
            finally:
                await _stop(operator)
    finally:
        emulator.stdin.close()
        await _stop(emulator)


def report(result: dict[str, Any]) -> str:
    count = result["count"]
    latencies = result["latencies"]
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    rows = [
        ("FluxDeployments created", f"{count}"),
        ("created a second", f"{result['rate']:g}" if result["rate"] else "burst"),
        ("time to children p50", f"{quantiles[49] * 1000:.0f} ms"),
        ("time to children p99", f"{quantiles[98] * 1000:.0f} ms"),
        ("time to children max", f"{latencies[-1] * 1000:.0f} ms"),
        ("all children, from first POST", f"{result['all_s']:.1f} s"),
        ("API requests per resource", f"{result['requests'] / count:.2f}"),
    ]
    for verb, n in sorted(result["by_verb"].items()):
        if n:
            rows.append((f"  {verb}", f"{n / count:.2f}"))
    emulator_cpu = result["emulator_cpu_s"]
    rows += [
        ("operator CPU", f"{result['operator_cpu_s']:.1f} s"),
        ("operator CPU per resource", f"{result['operator_cpu_s'] / count * 1000:.0f} ms"),
        ("emulator CPU", f"{emulator_cpu:.1f} s"),
        (
            "emulator requests per CPU-second",
            f"{result['requests'] / emulator_cpu:.0f}" if emulator_cpu else "-",
        ),
        ("operator peak RSS", f"{result['peak_rss_mib']:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["operator benchmark (kmock KubernetesEmulator over HTTP, in its own process)"]
    lines += [f"  {key.ljust(width)}  {value:>10}" for key, value in rows]
    lines.append("  requests by verb and kind:")
    for key, n in sorted(result["by_kind"].items(), key=lambda kv: -kv[1]):
        if n:
            lines.append(f"    {key.ljust(width - 2)}  {n:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="FluxDeployments created a second (default 0: all at once, as fast as taken)",
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds without a request that end the count"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--emulator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.emulator:
        asyncio.run(serve_emulator())
        return 0
    result = asyncio.run(run(args))
    print(report(result))
    if args.json is not None:
        latencies = result["latencies"]
        quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
        figures = {k: v for k, v in result.items() if k != "latencies"}
        figures.update(p50_s=quantiles[49], p99_s=quantiles[98], max_s=latencies[-1])
        args.json.write_text(json.dumps(figures, indent=2, default=dict))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Operator benchmark: create N FluxDeployments against the Kubernetes API emulator and
measure how long until each one's children exist, and the operator's peak memory.

    .venv/bin/python bench/operator_bench.py [--count 200]

The operator runs as its own process (``python -m flux_operator``), exactly as deployed,
against kmock's KubernetesEmulator over HTTP. Time-to-children of a FluxDeployment runs
from just before its POST to the creation of the last of its children (Deployment, Service,
HPA, presets ConfigMap), as recorded by the emulator. Peak RSS is the operator process's
VmHWM from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml

NAMESPACE = "bench"
CHILD_KINDS = ("deployments", "services", "horizontalpodautoscalers", "configmaps")
RESOURCES = {
    "fluxserve.dev/v1alpha1/fluxdeployments": ("FluxDeployment", True),
    "apps/v1/deployments": ("Deployment", True),
    "v1/services": ("Service", True),
    "v1/configmaps": ("ConfigMap", True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "v1/events": ("Event", True),
    "v1/namespaces": ("Namespace", False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
}


class TimingEmulator(kmock.KubernetesEmulator):
    """The emulator, assigning uid/generation as an API server does, recording when each
    object was created, and forgetting each request once answered.

    kmock keeps every request for a test's assertions and matches each new request
    against that history, so its own cost grows with every request served (O(n^2) over a
    run: after a few thousand requests, a GET takes tens of milliseconds). The benchmark
    asserts nothing on requests; dropping them keeps the figures about the operator.
    """

    created: dict[tuple[str, str], float]

    async def _handle(self, request: kmock.Request) -> Any:
        try:
            return await self._handle_timed(request)
        finally:
            self._forget(request)

    def _forget(self, request: kmock.Request) -> None:
        self._requests[:] = [r for r in self._requests if r is not request]
        for payload in self._payloads:
            payload._requests[:] = [r for r in payload._requests if r is not request]

    async def _handle_timed(self, request: kmock.Request) -> Any:
        if not hasattr(self, "created"):
            self.created = {}
        data = request.data
        if (
            request.resource is not None
            and request.action == kmock.action.CREATE
            and isinstance(data, dict)
        ):
            meta = data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault(
                "creationTimestamp",
                datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            response = await super()._handle(request)
            if response.status < 300:
                self.created.setdefault(
                    (request.resource.plural, str(meta.get("name"))), time.monotonic()
                )
            return response
        return await super()._handle(request)


def _spec(i: int) -> dict[str, Any]:
    return {
        "release": "v1.0.0",
        "image": "ghcr.io/acme/fluxserve-server",
        "model": {"id": "black-forest-labs/FLUX.1-dev", "source": {"pvc": {"claimName": "w"}}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
        "stylePresets": {"style": {"promptTemplate": "{prompt}, style " + str(i)}},
    }


def _children_done(created: dict[tuple[str, str], float], name: str) -> float | None:
    times = [created.get((kind, name)) for kind in CHILD_KINDS[:3]]
    presets = [
        t
        for (kind, n), t in created.items()
        if kind == "configmaps" and n.startswith(f"{name}-presets-")
    ]
    if any(t is None for t in times) or not presets:
        return None
    return max([t for t in times if t is not None] + presets)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(count: int, timeout: float) -> dict[str, float]:
    server_handler = TimingEmulator()
    for key, (kind, namespaced) in RESOURCES.items():
        server_handler.resources[key] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            subresources={"status"},
        )
    async with server_handler as emulator, kmock.Server(emulator):
        workdir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "e", "cluster": {"server": str(emulator.url)}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
                    "current-context": "e",
                }
            )
        )
        log = (workdir / "operator.log").open("w")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flux_operator",
            "--kubeconfig",
            str(kubeconfig),
            "--health-port",
            "0",
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            url = (
                f"{str(emulator.url).rstrip('/')}/apis/fluxserve.dev/v1alpha1"
                f"/namespaces/{NAMESPACE}/fluxdeployments"
            )
            started: dict[str, float] = {}
            async with aiohttp.ClientSession() as session:
                # Let the operator start watching before the burst.
                await asyncio.sleep(2)
                t_burst = time.monotonic()
                for i in range(count):
                    name = f"fxd-{i:04d}"
                    body = {
                        "apiVersion": "fluxserve.dev/v1alpha1",
                        "kind": "FluxDeployment",
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": _spec(i),
                    }
                    started[name] = time.monotonic()
                    async with session.post(url, json=body) as resp:
                        resp.raise_for_status()
                deadline = time.monotonic() + timeout
                done: dict[str, float] = {}
                while len(done) < count and time.monotonic() < deadline:
                    for name in started:
                        if name not in done:
                            t = _children_done(emulator.created, name)
                            if t is not None:
                                done[name] = t - started[name]
                    await asyncio.sleep(0.05)
                t_all = time.monotonic() - t_burst
            peak = _peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
            log.close()
    if len(done) < count:
        raise SystemExit(f"only {len(done)}/{count} got their children within {timeout}s")
    latencies = sorted(done.values())
    return {
        "count": count,
        "p50_s": statistics.quantiles(latencies, n=100, method="inclusive")[49],
        "p99_s": statistics.quantiles(latencies, n=100, method="inclusive")[98],
        "max_s": latencies[-1],
        "all_s": t_all,
        "peak_rss_mib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.count, args.timeout))
    rows = [
        ("FluxDeployments created", f"{result['count']:.0f}"),
        ("time to children p50", f"{result['p50_s'] * 1000:.0f} ms"),
        ("time to children p99", f"{result['p99_s'] * 1000:.0f} ms"),
        ("time to children max", f"{result['max_s'] * 1000:.0f} ms"),
        ("all children, from first POST", f"{result['all_s']:.1f} s"),
        ("operator peak RSS", f"{result['peak_rss_mib']:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print("operator benchmark (kmock KubernetesEmulator over HTTP)")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

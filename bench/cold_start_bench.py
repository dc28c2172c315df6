"""Cold start, phase by phase: a first start against a start with the compile cache.

    make bench                                # CPU: the bench model, inductor, 256x256
    python bench/cold_start_bench.py --gpu    # make bench-gpu: FLUX.1-dev's shapes (CUDA)

CPU (``make bench``): two real server processes, one after the other, each as a fresh
pod would start (a new, empty ``TORCHINDUCTOR_CACHE_DIR``), both with ``--compile regional
--compile-cache DIR`` on the bench-size random FLUX: the first finds DIR empty and fills
it, the second starts from it. For each: ``fluxserve_startup_seconds`` per phase (read
from its /metrics), the time from the process's start to ready, and to its first image
answered over REST; then the ratio first/cached.

GPU (``--gpu``, skipped with a reason without CUDA): FLUX.1-dev's transformer and VAE
(random weights, built on the GPU; the text encoders replaced by embeddings of their
shapes, as ``bench/gpu_bench.py`` does), compiled regionally with inductor and warmed up
at 1024x1024, in two fresh processes sharing one compile cache, through the server's own
``CompileCache`` and ``StartupPhases``. The load phase there is the random model's
construction, not a read of FLUX.1-dev's 24 GB (nothing is downloaded here); time to
ready from a warm node cache against a hub download needs the real weights and network.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PHASES = ("download", "load", "compile", "warmup")
RUNS = ("first start", "with cache")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _phases(metrics: str) -> dict[str, float]:
    found = {}
    for line in metrics.splitlines():
        if line.startswith("fluxserve_startup_seconds{"):
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            found[phase] = float(line.rsplit(" ", 1)[1])
    return found


def server_start(model: Path, cache: Path, work: Path, size: int, timeout: float) -> dict[str, Any]:
    """One start of the real server: its phases, time to ready and to a first image."""
    http, grpc = _free_port(), _free_port()
    log_path = work / f"server-{http}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
    # A fresh pod: inductor's default directory is empty (--compile-cache moves it).
    env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=work)
    env["HF_HUB_OFFLINE"] = "1"
    command = [
        sys.executable, "-m", "flux_server", "--model", str(model), "--device", "cpu",
        "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
        "--compile", "regional", "--compile-backend", "inductor",
        "--compile-cache", str(cache), "--warmup-sizes", f"{size}x{size}",
        "--max-batch-size", "1", "--default-width", str(size), "--default-height", str(size),
        "--default-steps", "4", "--cache-bytes", "0",
    ]  # fmt: skip
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{http}"
    try:
        ready = _until_ready(process, url, started + timeout, log_path)
        answer = httpx.post(f"{url}/generate", json={"prompt": "a harbour", "seed": 1}, timeout=600)
        answer.raise_for_status()
        first_image = time.monotonic() - started
        phases = _phases(httpx.get(f"{url}/metrics", timeout=30).text)
    finally:
        process.terminate()
        process.wait(60)
    messages = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    outcome = next(
        (m["fluxserve"]["detail"].get("cache") for m in messages
         if m.get("message") == "start phase done"
         and m.get("fluxserve", {}).get("detail", {}).get("phase") == "compile"),
        None,
    )  # fmt: skip
    return {"phases": phases, "ready": ready, "first_image": first_image, "cache": outcome}


def _until_ready(process: subprocess.Popen[bytes], url: str, deadline: float, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready in time:\n{log.read_text()[-4000:]}")


def gpu_start(cache: Path, size: int, steps: int, tiny: bool) -> dict[str, Any]:
    """One start in this (fresh) process on FLUX.1-dev's shapes; --gpu's child.
    ``tiny``: the tiny model on the CPU with aot_eager, a check of this code only."""
    import torch
    from gpu_pipeline import build_pipeline, generate, sync

    from flux_server.execution import speedups
    from flux_server.execution.compile_cache import CompileCache, key_parts
    from flux_server.execution.startup import StartupPhases

    device, dtype = ("cpu", torch.float32) if tiny else ("cuda", torch.bfloat16)
    phases = StartupPhases()
    options = speedups.SpeedOptions(
        compile="regional",
        compile_backend="aot_eager" if tiny else "inductor",
        warmup_sizes=((size, size),),
    )
    with tempfile.TemporaryDirectory() as tmp, phases.timed("load"):
        pipe = build_pipeline(tiny, device, dtype, Path(tmp))
        speedups.prepare(pipe, options, device, with_adapters=False)
        sync(device)
    with phases.timed("compile"):
        compile_cache = CompileCache(cache, key_parts(pipe, options, device))
        outcome = compile_cache.load()
        speedups.compile_transformer(pipe, options)
    for call in range(2):  # the first call compiles; the second is a plain warm-up
        with phases.timed("compile" if call == 0 else "warmup"):
            generate(pipe, 1, (size, size), steps, device)
            sync(device)
    with phases.timed("compile"):
        compile_cache.save()
    return {"phases": phases.seconds, "cache": outcome}


def table(results: dict[str, dict[str, Any]]) -> str:
    first, cached = (results[run] for run in RUNS)
    rows = [(phase, first["phases"].get(phase), cached["phases"].get(phase)) for phase in PHASES]
    rows.append(("sum of phases", sum(first["phases"].values()), sum(cached["phases"].values())))
    for label, key in (("process to ready", "ready"), ("process to first image", "first_image")):
        if key in first:
            rows.append((label, first[key], cached[key]))
    lines = [f"    {'':<24}{RUNS[0]:>13}{RUNS[1]:>13}{'ratio':>9}"]
    for label, a, b in rows:
        # Under 10 ms (a local directory's "download") a ratio is noise.
        ratio = f"{a / b:>8.2f}x" if a and b and min(a, b) >= 0.01 else f"{'-':>9}"
        lines.append(f"    {label:<24}{_s(a):>13}{_s(b):>13}{ratio}")
    lines.append(f"    compile cache: {first['cache']} -> {cached['cache']}")
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gpu", action="store_true", help="FLUX.1-dev's shapes on CUDA")
    parser.add_argument("--size", type=int, help="warm-up side (CPU 256, GPU 1024)")
    parser.add_argument("--steps", type=int, default=4, help="--gpu: steps per warm-up call")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to ready, each")
    parser.add_argument(
        "--tiny", action="store_true", help="--gpu's code on a CPU, tiny model (a check)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:  # one --gpu start, in a fresh process
        print(json.dumps(gpu_start(args.child, args.size, args.steps, args.tiny)))
        return 0
    if args.gpu:
        import torch

        if not torch.cuda.is_available() and not args.tiny:
            print("cold start on FLUX.1-dev's shapes: skipped, no CUDA device here (torch "
                  f"{torch.__version__}); the CPU figures are in make bench")  # fmt: skip
            return 0
    size = args.size or (64 if args.tiny else 1024 if args.gpu else 256)
    with tempfile.TemporaryDirectory(prefix="fluxserve-cold-") as tmp:
        work = Path(tmp)
        cache = work / "compile-cache"
        results: dict[str, dict[str, Any]] = {}
        if args.gpu:
            for run in RUNS:
                child = [sys.executable, __file__, "--child", str(cache), "--size", str(size),
                         "--steps", str(args.steps), *(["--tiny"] * args.tiny)]  # fmt: skip
                out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
                results[run] = json.loads(out.strip().splitlines()[-1])
            where = (
                f"tiny model, {size}x{size}, aot_eager, CPU: a check, not a measurement"
                if args.tiny
                else f"FLUX.1-dev shapes, {size}x{size}, bf16, regional inductor, CUDA"
            )
        else:
            from flux_server.tools.tiny_model import write_tiny_flux

            model = write_tiny_flux(work / "model", size="bench")
            for run in RUNS:
                results[run] = server_start(model, cache, work, size, args.timeout)
            where = (f"bench model, {size}x{size}, regional inductor, CPU ({os.cpu_count()} "
                     f"cores, load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"cold start: first start vs a start with --compile-cache ({where})")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

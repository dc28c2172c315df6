"""``make demo``: serve a random-weight FLUX and call it the ways the article does.

1. write the tiny random FLUX pipeline and a ``cyberpunk`` style preset,
2. start ``python -m flux_server`` (REST on 8080, gRPC on 50051) and wait for /readyz,
3. run the article's ``requests`` example (``demo_article_rest.py``) -> output.png,
4. generate once more through the SDK over gRPC -> briefcase_detail.png,
5. stop the server with SIGTERM (it drains, then exits).

Everything lands in ``demo-output/``. The weights are random: the images are noise-like
patterns, not pictures; the point is the path a request takes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


@contextmanager
def ticking(what: str, every: float = 5.0) -> Iterator[None]:
    """Say every few seconds that WHAT is still going, so a long wait is never silent."""
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            print(f"    ... {what} ({time.monotonic() - started:.0f}s)", flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}; its log:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    process.terminate()
    sys.exit(f"the server was not ready after {timeout:.0f}s; its log is {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=50051)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    from flux_contract.presets import StylePreset, presets_to_files

    model = out / "tiny-flux"
    if not (model / "model_index.json").exists():
        say(f"writing a random-weight FLUX pipeline to {model}")
        with ticking("writing the model"):
            subprocess.run(
                [sys.executable, "-m", "flux_server.tiny_model", str(model)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    else:
        say(f"using the random-weight FLUX pipeline in {model}")
    presets = out / "presets"
    presets.mkdir(exist_ok=True)
    for name, content in presets_to_files(
        {
            "cyberpunk": StylePreset(
                prompt_template="{prompt}, cyberpunk, neon glow, rain-slick streets",
                negative_prompt="washed out colours",
            )
        }
    ).items():
        (presets / name).write_text(content)

    log = out / "server.log"
    say(f"starting the server (REST :{args.http_port}, gRPC :{args.grpc_port}); log: {log}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
    env["HF_HUB_OFFLINE"] = "1"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flux_server",
                "--model",
                str(model),
                "--presets-dir",
                str(presets),
                "--http-port",
                str(args.http_port),
                "--grpc-port",
                str(args.grpc_port),
                "--metrics-port",
                "0",
                "--release",
                "demo",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        say("loading the model and warming it up")
        with ticking("loading"):
            wait_ready(f"http://localhost:{args.http_port}", server, log, timeout=300)
        say("ready. Generating: the article's REST example (1024x1024, 50 steps, negative)")
        started = time.monotonic()
        article = ROOT / "scripts" / "demo_article_rest.py"
        if args.http_port != 8080:
            sys.exit("the article's example calls port 8080; run the demo with --http-port 8080")
        with ticking("generating"):
            result = subprocess.run([sys.executable, str(article)], cwd=out, check=False)
        if result.returncode != 0 or not (out / "output.png").exists():
            sys.exit("the article's example did not write output.png")
        say(f"{out / 'output.png'} written in {time.monotonic() - started:.1f}s")

        say("generating once more through the SDK over gRPC (512x512, 8 steps)")
        from flux_client import FluxModelClient

        with (
            FluxModelClient(host="localhost", port=args.grpc_port, timeout=300) as client,
            ticking("generating"),
        ):
            image = client.generate(
                prompt="a close-up of a silver briefcase on a wooden table, studio lighting",
                width=512,
                height=512,
                steps=8,
                output_path=out / "briefcase_detail.png",
            )
        say(
            f"{out / 'briefcase_detail.png'} written: {image.size[0]}x{image.size[1]},"
            f" seed {image.info.get('seed')}"
        )
    finally:
        say("stopping the server (SIGTERM: it drains, then exits)")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.returncode != 0:
        sys.exit(f"the server did not stop cleanly (exit {server.returncode}); its log is {log}")
    print()
    print(f"Images: {out / 'output.png'} (REST, the article's request)")
    print(f"        {out / 'briefcase_detail.png'} (SDK over gRPC)")
    print("They come from a FLUX pipeline with RANDOM weights (python -m flux_server.tiny_model),")
    print("so they show noise, not a city: the demo exercises the serving path, not the model.")
    print("To serve FLUX.1-dev itself on a GPU, see the README: Running the real model.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

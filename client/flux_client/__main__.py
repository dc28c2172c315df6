"""``python -m flux_client``: the SDK from a shell, for trying a deployment.

    python -m flux_client --port 8080 ready --wait 120
    python -m flux_client --port 50051 generate "a lighthouse at dawn" -o lighthouse.png --seed 7
    python -m flux_client --port 50051 vqa lighthouse.png "What is in the picture?"
    python -m flux_client edit lighthouse.png "make it night" -o night.png --strength 0.6
    python -m flux_client presets
    python -m flux_client generate "a lighthouse" --async     # prints the job's id
    python -m flux_client jobs watch job_...                  # also: jobs get|cancel ID
    python -m flux_client generate "a cat" --style-preset realistic --user-id alice
    python -m flux_client feedback REQUEST_ID like
    python -m flux_client experiments [--prometheus http://prometheus:9090] [--json]
    python -m flux_client quality --stable URL --candidate URL --golden golden.yaml [--json]

``--port`` may be the server's REST or gRPC port: the client asks it which it speaks. On a
terminal, ``generate`` shows each denoising step as it finishes; that needs gRPC, so over
REST it says so once, or streams from ``--grpc-port`` when given. ``--progress always`` /
``never`` overrides the terminal check (``FLUXSERVE_PROGRESS`` sets the default).

The API key comes from ``--api-key`` or the ``FLUXSERVE_API_KEY`` environment variable.
Exit status: 0 done, 1 the server refused or failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import httpx

from flux_client import experiment_report
from flux_client._cli_jobs import add_async_flags, add_jobs_parser, run_jobs, submit
from flux_client.client import FluxModelClient
from flux_client.errors import FluxError
from flux_client.quality.cli import add_quality_parser, run_quality
from flux_client.types import GenerationResult, ImageFormat, Progress

API_KEY_ENV = "FLUXSERVE_API_KEY"
PROGRESS_ENV = "FLUXSERVE_PROGRESS"

Subcommands = argparse._SubParsersAction  # what add_subparsers returns


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flux_client", description="Call a fluxserve server."
    )
    parser.add_argument("--host", default="localhost")
    parser.add_argument(
        "--port", type=int, default=8080, help="the server's REST or gRPC port (default 8080)"
    )
    parser.add_argument(
        "--transport",
        choices=("auto", "grpc", "http"),
        default="auto",
        help="auto (default): ask the port which it speaks",
    )
    parser.add_argument("--api-key", help=f"default: ${API_KEY_ENV}")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per call")
    commands = parser.add_subparsers(dest="command", required=True)

    ready = commands.add_parser("ready", help="is the model loaded? (exit 1 if not)")
    ready.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it")
    _add_image_parsers(commands)
    commands.add_parser("presets", help="the style presets the server serves (JSON)")
    add_jobs_parser(commands)
    _add_experiment_parsers(commands)
    add_quality_parser(commands)
    return parser


def _add_image_parsers(commands: Subcommands[argparse.ArgumentParser]) -> None:
    """``generate``, ``edit`` and ``vqa``: the calls that send a prompt or an image."""
    generate = commands.add_parser("generate", help="generate images from a prompt")
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", type=Path, default=Path("output.png"))
    _generation_flags(generate)
    generate.add_argument("--num-images", type=int, help="more than 1: output-1.png, ...")
    generate.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default=os.environ.get(PROGRESS_ENV, "auto"),
        help=f"step progress on stderr; auto: when it is a terminal (${PROGRESS_ENV})",
    )
    generate.add_argument(
        "--grpc-port", type=int, help="the server's gRPC port, for progress when --port is REST"
    )
    add_async_flags(generate)

    edit = commands.add_parser("edit", help="edit an image as a prompt says")
    edit.add_argument("image", type=Path)
    edit.add_argument("prompt")
    edit.add_argument("-o", "--output", type=Path, default=Path("edited.png"))
    edit.add_argument("--mask", type=Path, help="white = repaint (inpainting)")
    edit.add_argument("--strength", type=float)
    edit.add_argument("--mode", choices=("img2img", "inpaint", "instruct"))
    _generation_flags(edit)

    vqa = commands.add_parser("vqa", help="ask a question about an image")
    vqa.add_argument("image", type=Path)
    vqa.add_argument("question")
    vqa.add_argument("--max-tokens", type=int, default=64)


def _add_experiment_parsers(commands: Subcommands[argparse.ArgumentParser]) -> None:
    """``feedback`` and ``experiments``: outcomes sent, and the arms' figures read."""
    feedback = commands.add_parser(
        "feedback", help="record an outcome (an event) of a request served in an experiment"
    )
    feedback.add_argument("request_id")
    feedback.add_argument("event", help="a free-form name: like, download, ...")
    feedback.add_argument("--value", type=float, default=1.0, help="between 0 and 1 (default 1)")

    experiments = commands.add_parser(
        "experiments",
        help="per arm of each experiment: requests, latency, GPU s/image, event rates and a "
        "z-test against the control (one server, or every replica with --prometheus)",
    )
    experiments.add_argument("--prometheus", metavar="URL", help="sum every replica's metrics")
    experiments.add_argument(
        "--window", help="with --prometheus: counts over this range (e.g. 7d), not since start"
    )
    experiments.add_argument("--json", action="store_true", help="print JSON, not a table")


def _generation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--negative-prompt")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--true-cfg-scale", type=float)
    parser.add_argument("--style-preset")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--priority", choices=("normal", "high"), default="normal")
    parser.add_argument("--user-id", help="who it is for (X-User-Id): picks an experiment's arm")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another request header (gRPC metadata), e.g. X-Customer-Group=beta; repeatable",
    )


def _options(args: argparse.Namespace) -> dict[str, object]:
    names = [
        "negative_prompt",
        "width",
        "height",
        "steps",
        "guidance_scale",
        "true_cfg_scale",
        "style_preset",
        "seed",
        "priority",
        "user_id",
    ]
    options: dict[str, object] = {name: getattr(args, name) for name in names}
    headers = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--header {header!r}: write NAME=VALUE")
        headers[name.strip()] = value
    options["headers"] = headers
    return options


def _output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(count)]


def run(args: argparse.Namespace, client: FluxModelClient) -> int:
    if args.command == "ready":
        if args.wait > 0:
            client.wait_until_ready(timeout=args.wait)
            return 0
        ready = client.is_ready()
        print("ready" if ready else "not ready")
        return 0 if ready else 1
    if args.command == "jobs":
        return run_jobs(args, client)
    if args.command == "generate" and args.async_:
        options = {"num_images": args.num_images, **_options(args)}
        return submit(args, client, options)
    if args.command == "generate":
        result = _generate(args, client)
        for image, path in zip(
            result.images, _output_paths(args.output, len(result.images)), strict=True
        ):
            image.save(path)
            print(f"{path}  seed={image.seed} {image.width}x{image.height}")
        print(f"request {result.request_id}: batch of {result.batch_size}, "
              f"{result.timings.total_ms:.0f} ms")  # fmt: skip
        if result.experiment is not None:
            print(f"experiment {result.experiment.name}: arm {result.experiment.arm}")
        return 0
    if args.command == "edit":
        result = client.edit_images(
            args.image,
            args.prompt,
            mask=args.mask,
            strength=args.strength,
            mode=args.mode,
            **_options(args),  # type: ignore[arg-type]
        )
        result.images[0].save(args.output)
        print(f"{args.output}  seed={result.images[0].seed}")
        return 0
    if args.command == "vqa":
        print(client.vqa(args.image, args.question, max_tokens=args.max_tokens))
        return 0
    if args.command == "feedback":
        done = client.feedback(args.request_id, args.event, args.value)
        counted = "counted" if done.counted else "already counted for this request"
        print(f"{done.event} for {done.experiment}: arm {done.arm} ({counted})")
        return 0
    if args.command == "experiments":
        print(_experiments_report(args, client).rstrip("\n"))
        return 0
    presets = client.list_presets()
    print(json.dumps({name: json.loads(p.to_json()) for name, p in presets.items()}, indent=2))
    return 0


def _experiments_report(args: argparse.Namespace, client: FluxModelClient) -> str:
    if args.prometheus:
        return experiment_report.report(
            prometheus_url=args.prometheus, window=args.window, as_json=args.json
        )
    if args.window:
        raise ValueError("--window needs --prometheus")
    built = experiment_report.build_report(client.list_experiments())
    if args.json:
        return experiment_report.render_json(built)
    return experiment_report.render_table(built)


def progress_line(step: int, total: int, width: int = 30) -> str:
    """``step 3/28 [###.......]``: one line, redrawn in place on a terminal."""
    done = width * step // total if total > 0 else width
    return f"step {step}/{total} [{'#' * done}{'.' * (width - done)}]"


def wants_progress(choice: str, stream: TextIO) -> bool:
    """Whether to show progress: ``always``, ``never``, or ``auto`` on a terminal."""
    if choice in ("always", "never"):
        return choice == "always"
    return stream.isatty()


def _generate(args: argparse.Namespace, client: FluxModelClient) -> GenerationResult:
    options = {
        "num_images": args.num_images,
        "output_format": ImageFormat.from_path(args.output),
        **_options(args),
    }
    if not wants_progress(args.progress, sys.stderr):
        return client.generate_images(args.prompt, **options)
    if client.transport == "grpc":
        return _with_progress(client, args.prompt, options)
    if args.grpc_port is None:
        print(
            "progress needs gRPC: pass --grpc-port (the server's gRPC port) to see each step",
            file=sys.stderr,
        )
        return client.generate_images(args.prompt, **options)
    s = client.settings
    with FluxModelClient(
        s.host, args.grpc_port, "grpc", s.api_key, s.timeout, secure=s.secure
    ) as streaming:
        return _with_progress(streaming, args.prompt, options)


def _with_progress(
    client: FluxModelClient, prompt: str, options: dict[str, object]
) -> GenerationResult:
    result: GenerationResult | None = None
    try:
        for event in client.stream(prompt, **options):  # type: ignore[arg-type]
            if isinstance(event, Progress):
                print(f"\r{progress_line(event.step, event.total_steps)}", end="", file=sys.stderr)
                sys.stderr.flush()
            elif isinstance(event, GenerationResult):
                result = event
    finally:
        print(file=sys.stderr)
    if result is None:
        raise FluxError("the progress stream ended without a result")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.command == "quality":  # two servers, not the one of --host/--port
        return run_quality(args, api_key)
    try:
        with FluxModelClient(
            host=args.host,
            port=args.port,
            transport=args.transport,
            api_key=api_key,
            timeout=args.timeout,
        ) as client:
            return run(args, client)
    except FluxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:  # Prometheus' HTTP API (experiments --prometheus)
        print(f"error: prometheus: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

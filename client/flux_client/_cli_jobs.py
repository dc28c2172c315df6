"""The CLI's async-job commands: ``generate --async`` prints the job's id;
``jobs get|cancel|watch ID`` read, cancel and follow a job (on any replica)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime
from typing import Any

from flux_client.client import FluxModelClient
from flux_client.jobs import JobEvent, JobInfo


def add_jobs_parser(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="async jobs: get, cancel or watch one by its id")
    jobs.add_argument("action", choices=("get", "cancel", "watch"))
    jobs.add_argument("id", help="the job's id (job_...)")


def add_async_flags(generate: argparse.ArgumentParser) -> None:
    generate.add_argument(
        "--async",
        dest="async_",
        action="store_true",
        help="queue it as a job and print the job's id (see: jobs watch ID)",
    )
    generate.add_argument("--webhook", help="with --async: POST the job's events here")
    generate.add_argument(
        "--webhook-events",
        default="completed",
        help="with --webhook: comma separated start,progress,completed (default completed)",
    )


def info_json(info: JobInfo) -> dict[str, Any]:
    """A job as JSON, images without their bytes."""

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value.value if hasattr(value, "value") else value

    return dict(plain(dataclasses.asdict(info)))


def event_line(event: JobEvent) -> str:
    """One line per event: ``progress 3/28``, ``queued at 2``, ``succeeded``, ..."""
    data = event.data
    if event.kind == "progress":
        return f"progress {data.get('step')}/{data.get('total')}"
    if event.kind == "queued":
        line = f"queued at {data.get('queue_position')}"
        if data.get("position") is not None:
            line += f", position {data['position']}"
        if data.get("eta_seconds") is not None:
            line += f", eta {data['eta_seconds']:g}s"
        return line + (", warming up (no worker yet)" if data.get("warming_up") else "")
    if event.kind == "failed":
        error = data.get("error") or {}
        return f"failed: {error.get('code')}: {error.get('message')}"
    if event.kind == "succeeded":
        urls = [image.get("url") for image in data.get("images") or ()]
        return "succeeded" + (f": {' '.join(u for u in urls if u)}" if urls else "")
    return event.kind


def submit(args: argparse.Namespace, client: FluxModelClient, options: dict[str, Any]) -> int:
    events = [e.strip() for e in args.webhook_events.split(",") if e.strip()]
    job = client.submit(
        args.prompt,
        webhook=args.webhook,
        webhook_events_filter=events if args.webhook else (),
        **options,
    )
    print(job.id)
    return 0


def run_jobs(args: argparse.Namespace, client: FluxModelClient) -> int:
    job = client.job(args.id)
    if args.action == "get":
        print(json.dumps(info_json(job.status()), indent=2))
        return 0
    if args.action == "cancel":
        print(json.dumps(info_json(job.cancel()), indent=2))
        return 0
    last = None
    for event in job.events():
        print(event_line(event), flush=True)
        last = event.kind
    print(f"job {args.id}: {last}", file=sys.stderr)
    return 0 if last == "succeeded" else 1

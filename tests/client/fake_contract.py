"""What the fake servers of ``wire_fakes`` share: the script of failures and what
arrived, and the flat-colour images and answers they make without a model."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from PIL import Image

DEFAULT_SIZE = 64
DEFAULT_SEED = 1234
PRESETS = {
    "cyberpunk": {
        "promptTemplate": "{prompt}, neon, cyberpunk",
        "negativePrompt": "blurry",
        "steps": 12,
        "lora": {"name": "neon", "scale": 0.8},
    },
    "plain": {"promptTemplate": "{prompt}"},
}


class Failure(Exception):
    """A contract error: (HTTP status, gRPC code, message, field, retry-after)."""

    def __init__(
        self,
        http: int,
        code: grpc.StatusCode,
        message: str,
        field: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http, self.code, self.message, self.field = http, code, message, field
        self.error_code = error_code or code.name.lower()
        self.retry_after: str | None = "2" if http == 429 else None


FAILURES = {
    "unavailable": lambda: Failure(503, grpc.StatusCode.UNAVAILABLE, "model not ready"),
    "overloaded": lambda: Failure(429, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full (64)"),
    "internal": lambda: Failure(500, grpc.StatusCode.INTERNAL, "out of memory"),
}


@dataclass
class Script:
    """How the fake servers behave next, and what they saw."""

    fail_next: list[str] = field(default_factory=list)
    """Failures (keys of FAILURES, or "hang") for the next requests, in order."""
    api_key: str | None = None
    """When set, requests must carry `authorization: Bearer <api_key>`."""
    seen: list[dict[str, Any]] = field(default_factory=list)
    """One record per request that arrived: its endpoint, fields, auth and priority."""
    release: threading.Event = field(default_factory=threading.Event)
    """Set to let hanging requests go (at teardown)."""
    ready: bool = True
    """What the health checks (gRPC health, GET /readyz) report."""

    def reset(self) -> None:
        self.ready = True
        self.fail_next.clear()
        self.api_key = None
        self.seen.clear()

    def calls(self, endpoint: str) -> int:
        return sum(1 for record in self.seen if record["endpoint"] == endpoint)


def png(width: int, height: int, seed: int, fmt: str) -> bytes:
    colour = (seed % 256, (seed // 256) % 256, (seed * 7) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt.upper())
    return buffer.getvalue()


async def admit(
    script: Script, endpoint: str, record: dict[str, Any], headers: Mapping[str, str]
) -> None:
    """What the real server does before work: authenticate, then (here) scripted failures."""
    auth = headers.get("authorization")
    record = {
        "endpoint": endpoint,
        "authorization": auth,
        "request_id": headers.get("x-request-id"),
        "user_agent": headers.get("user-agent"),
        **record,
    }
    script.seen.append(record)
    if script.api_key is not None and auth != f"Bearer {script.api_key}":
        if auth is None:
            raise Failure(401, grpc.StatusCode.UNAUTHENTICATED, "an API key is required")
        raise Failure(401, grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
    if record.get("priority") == "high" and script.api_key is not None:
        raise Failure(403, grpc.StatusCode.PERMISSION_DENIED, "this key may not use priority")
    if script.fail_next:
        kind = script.fail_next.pop(0)
        if kind == "hang":
            await asyncio.to_thread(script.release.wait, 30)
        else:
            raise FAILURES[kind]()


def generate_result(params: dict[str, Any], size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The fake engine: validates like the server and returns the REST JSON result."""
    prompt = params.get("prompt", "")
    if not prompt.strip():
        raise Failure(422, grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty", "prompt")
    for name in ("width", "height"):
        value = params.get(name)
        if value is not None and (value % 16 or not 16 <= value <= 2048):
            raise Failure(
                422,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name} must be a multiple of 16 between 16 and 2048, got {value}",
                name,
            )
    preset = params.get("style_preset")
    if preset is not None and preset not in PRESETS:
        raise Failure(
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown style preset {preset!r}",
            "style_preset",
        )
    width = params.get("width") or (size[0] if size else DEFAULT_SIZE)
    height = params.get("height") or (size[1] if size else DEFAULT_SIZE)
    seed = params.get("seed", DEFAULT_SEED)
    fmt = params.get("output_format") or "png"
    images = [
        {
            "b64": base64.b64encode(png(width, height, seed + i, fmt)).decode(),
            "seed": seed + i,
            "format": fmt,
            "width": width,
            "height": height,
        }
        for i in range(params.get("num_images") or 1)
    ]
    return {
        "images": images,
        "request_id": uuid.uuid4().hex,
        "release": "v0.0.0-test",
        "model": "fake",
        "batch_size": 1,
        "timings": {"queue_ms": 1.0, "inference_ms": 2.0, "total_ms": 3.5},
        "cache_hit": False,
    }


def decode_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception as exc:
        raise Failure(
            400, grpc.StatusCode.INVALID_ARGUMENT, "image is not a PNG/JPEG/WEBP", "image"
        ) from exc


def answer_question(image: bytes, question: str) -> str:
    if not question.strip():
        raise Failure(400, grpc.StatusCode.INVALID_ARGUMENT, "question is empty", "question")
    width, height = decode_size(image)
    return f"a {width}x{height} image; you asked: {question}"

"""The audit log: one JSON line per request, accepted or rejected.

Each line is an ``AuditRecord``: when, which request, which user, the prompt (or only
its SHA-256 when ``hash_prompts`` is on), the generation parameters, the decision and
its reason, the latency and whether the result came from the cache. Lines go to stdout
(``-``, for the cluster's log collector) or are appended to a file.

A record is written with a single ``write`` on a file opened with ``O_APPEND``, so
lines from many threads — or from several processes sharing the file — never
interleave.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["accepted", "rejected", "submitted", "canceled"]
"""``submitted``: an async job was accepted (its outcome gets a line of its own);
``canceled``: a job was cancelled by its id."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def sha256_hex(text: str) -> str:
    """The hex SHA-256 of a text's UTF-8 bytes (how prompts are hashed in the log)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditRecord(BaseModel):
    """What the log keeps about one request."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["audit"] = Field(
        default="audit",
        description="Tells audit lines from the server's other JSON lines in a shared stream.",
    )
    time: datetime = Field(
        default_factory=_now,
        description="When the line was written (UTC): the request arrived latency_ms before.",
    )
    request_id: str
    user: str | None = Field(default=None, description="The API key's user; None when open.")
    endpoint: str | None = Field(
        default=None, description='e.g. "rest:/generate", "grpc:Generate", "rest:/vqa".'
    )
    prompt: str | None = Field(
        default=None, description="The prompt after preset expansion, or the question (VQA)."
    )
    negative_prompt: str | None = None
    prompt_sha256: str | None = Field(
        default=None, description="Set by the log when prompts are hashed; the prompt is dropped."
    )
    negative_prompt_sha256: str | None = None
    params: dict[str, Any] = Field(
        default_factory=dict, description="Generation parameters (size, steps, seed, adapters…)."
    )
    decision: Decision
    reason: str | None = Field(
        default=None,
        description='Why: "blocklist", "minor_sexual", "classifier", "unauthenticated", '
        '"priority_denied" '
        "(served in the normal lane), or the error code of a failed request.",
    )
    detail: str | None = Field(
        default=None,
        description="What decided it: the blocklist entry or the classifier label that matched.",
    )
    status: int | None = Field(default=None, description="HTTP status sent (gRPC mapped to HTTP).")
    latency_ms: float | None = None
    cache_hit: bool = False
    job_id: str | None = Field(
        default=None, description="The async job's id: its submission, cancel and outcome."
    )
    experiment: dict[str, str] | None = Field(
        default=None,
        description='The experiment arm that served the request: {"name", "arm", "subject"}.',
    )


class AuditLog:
    """Writes ``AuditRecord``s as JSON lines to stdout (``"-"``) or a file (appended)."""

    def __init__(self, target: str | Path, hash_prompts: bool = False) -> None:
        self.target = target
        self.hash_prompts = hash_prompts
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._stream: TextIO | None = None
        if str(target) == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def line(self, record: AuditRecord) -> str:
        """The JSON line (without newline) written for ``record``, prompts hashed if so set."""
        if self.hash_prompts:
            record = record.model_copy(
                update={
                    "prompt": None,
                    "negative_prompt": None,
                    "prompt_sha256": sha256_hex(record.prompt)
                    if record.prompt is not None
                    else record.prompt_sha256,
                    "negative_prompt_sha256": sha256_hex(record.negative_prompt)
                    if record.negative_prompt is not None
                    else record.negative_prompt_sha256,
                }
            )
        return record.model_dump_json(exclude_none=True)

    def record(self, record: AuditRecord) -> None:
        """Write one record. Thread-safe; one ``write`` call per line."""
        data = self.line(record) + "\n"
        with self._lock:
            if self._fd is not None:
                encoded = data.encode("utf-8")
                written = os.write(self._fd, encoded)
                # Regular files take the whole buffer; loop only for the odd short write.
                while written < len(encoded):
                    written += os.write(self._fd, encoded[written:])
            elif self._stream is not None:
                self._stream.write(data)
                self._stream.flush()

    def close(self) -> None:
        """Close the file (stdout is left open)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._stream = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

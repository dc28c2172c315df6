"""The audit log: one line per request, accepted or rejected.

Each line is an ``AuditRecord``: when, which request, which user, the prompt (or only
its SHA-256 when ``hash_prompts`` is on), the generation parameters, the decision and
its reason, the latency and whether the result came from the cache. A line is an
Elastic Common Schema document (:mod:`flux_server.admission.audit_ecs` says where each field
goes, and reads a line back). Lines go to stdout (``-``, for the cluster's log
collector) or are appended to a file.

A record is written with a single ``write`` on a file opened with ``O_APPEND``, so
lines from many threads — or from several processes sharing the file — never
interleave.

The log is a compliance record, so it is never lost quietly:

* a file rotated away (``logrotate``'s rename) or removed — its directory too — is
  reopened at its path before the next line (the directory is recreated), as
  ``logging.handlers.WatchedFileHandler`` does;
* a line that cannot be written (a full disk, a read-only or vanished mount) raises
  :class:`AuditWriteError`; the caller refuses the request before any work, and the log
  stays *unhealthy* until a write succeeds again (:meth:`AuditLog.healthy` tries one:
  an ``audit_gap`` line, ``fluxserve.audit.kind: audit_gap``, saying since when lines
  were refused).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from flux_server.admission.audit_ecs import audit_line, gap_line

Decision = Literal["accepted", "rejected", "submitted", "canceled"]
"""``submitted``: an async job was accepted (its outcome gets a line of its own);
``canceled``: a job was cancelled by its id."""


class AuditWriteError(OSError):
    """An audit line could not be written; nothing may be served without one."""


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
        description="Tells audit lines from the server's other lines in a shared stream "
        "(fluxserve.audit.kind; event.dataset is fluxserve.audit).",
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
        description='Why: "blocklist", "minor_sexual", "hate", "classifier" (the prompt), '
        '"image_classifier" (an image made), "unauthenticated", "priority_denied" '
        "(served in the normal lane, or refused), or the error code of a failed request.",
    )
    detail: str | None = Field(
        default=None,
        description="What decided it: the blocklist entry, or the classifier label and score "
        "that matched.",
    )
    status: int | None = Field(
        default=None,
        description="HTTP status sent (gRPC mapped to HTTP); none on the line written when "
        "a request is admitted, before its answer is known.",
    )
    outcome: Literal["accepted", "failed"] | None = Field(
        default=None,
        description='"accepted": the line written when a request is admitted, before any '
        'work (no status yet); "failed": the final line of an admitted request that then '
        "ended in an error (its status is the one sent). A request served has no second line.",
    )
    latency_ms: float | None = None
    cache_hit: bool = False
    job_id: str | None = Field(
        default=None, description="The async job's id: its submission, cancel and outcome."
    )
    experiment: dict[str, str] | None = Field(
        default=None,
        description='The experiment arm that served the request: {"name", "arm", "subject"}.',
    )
    client: str | None = Field(
        default=None,
        description="The caller's address (an IPv6 one by its /64): on a failed-"
        "authentication line, which sums up an address's failures over an interval.",
    )
    count: int | None = Field(
        default=None,
        description="How many requests the line stands for (failed authentications of "
        "one address in one interval); absent: one.",
    )


class AuditLog:
    """Writes ``AuditRecord``s as ECS lines to stdout (``"-"``) or a file (appended);
    ``release`` is the server's, recorded on every line."""

    def __init__(
        self, target: str | Path, hash_prompts: bool = False, release: str | None = None
    ) -> None:
        self.target = target
        self.hash_prompts = hash_prompts
        self.release = release
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._stream: TextIO | None = None
        self._path: Path | None = None
        self._failing_since: datetime | None = None
        self._failures = 0
        self._partial = False
        self.on_failure: Callable[[OSError], None] | None = None
        """Called (outside the lock) for every line that could not be written."""
        if str(target) == "-":
            self._stream = sys.stdout
        else:
            self._path = Path(target)
            # Start-up fails on a path that cannot be opened at all (one line, exit).
            self._fd = self._open(self._path)

    def line(self, record: AuditRecord) -> str:
        """The ECS line (without newline) written for ``record``, prompts hashed if so set."""
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
        return audit_line(record, self.release)

    @staticmethod
    def _open(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _current_fd(self) -> int:
        """The open file, reopened first when the path no longer names it (rotated,
        removed, or its directory removed). Called under the lock."""
        assert self._path is not None
        try:
            on_disk = os.stat(self._path)
        except FileNotFoundError:
            on_disk = None
        if self._fd is not None:
            held = os.fstat(self._fd)
            if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (
                held.st_dev,
                held.st_ino,
            ):
                return self._fd
            os.close(self._fd)
            self._fd = None
        self._fd = self._open(self._path)
        return self._fd

    def _write(self, data: str) -> None:
        """One line, under the lock; raises OSError."""
        if self._path is not None:
            fd = self._current_fd()
            encoded = data.encode("utf-8")
            if self._partial:
                # A line cut short by the failure is ended, so every later line parses.
                encoded = b"\n" + encoded
            written = 0
            try:
                written = os.write(fd, encoded)
                # Regular files take the whole buffer; loop only for the odd short write.
                while written < len(encoded):
                    written += os.write(fd, encoded[written:])
            finally:
                self._partial = 0 < written < len(encoded) or (self._partial and written == 0)
        elif self._stream is not None:
            self._stream.write(data)
            self._stream.flush()

    def record(self, record: AuditRecord) -> None:
        """Write one record. Thread-safe; one ``write`` call per line. Raises
        :class:`AuditWriteError` when the line could not be written."""
        data = self.line(record) + "\n"
        try:
            with self._lock:
                if self._failing_since is not None:
                    self._write(self._gap_line())
                self._write(data)
                self._failing_since = None
                self._failures = 0
        except OSError as exc:
            self._failed(exc)
            raise AuditWriteError(
                exc.errno, f"audit log {self.target}: {exc.strerror or exc}"
            ) from exc

    def healthy(self) -> bool:
        """True when lines are being written. After a failure, tries again (the
        ``audit_gap`` line that records the outage), so a probe sees the recovery."""
        if self._failing_since is None:
            return True
        try:
            with self._lock:
                if self._failing_since is not None:
                    self._write(self._gap_line())
                    self._failing_since = None
                    self._failures = 0
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def _gap_line(self) -> str:
        """Says that lines were refused (their requests were refused too) from when."""
        return gap_line(_now(), self._failing_since, self._failures, self.release) + "\n"

    def _failed(self, exc: OSError) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = _now()
            self._failures += 1
        if self.on_failure is not None:
            self.on_failure(exc)

    def free_bytes(self) -> float:
        """Bytes free to this process on the log's volume; NaN for stdout or when the
        volume cannot be read (the alert compares, and NaN never fires)."""
        if self._path is None:
            return math.nan
        try:
            st = os.statvfs(self._path.parent)
        except OSError:
            return math.nan
        return float(st.f_bavail * st.f_frsize)

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

"""Real server processes (``python -m flux_server``) on free ports, for the tests."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from ecs_mappings import flat


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]  # or forked.Forked, which answers the same calls
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The server's log lines (ECS documents), each with its fields named by their
        dotted paths: ``trace.id``, ``log.level``, ``fluxserve.detail.http_port``."""
        return [flat(json.loads(line)) for line in self.log().splitlines() if line.startswith("{")]

    def tracebacks(self) -> list[str]:
        """Every traceback in the log: a logged exception's (its ``error.stack_trace``),
        or one Python printed as text."""
        logged = [
            str(r["error.stack_trace"]) for r in self.log_records() if "error.stack_trace" in r
        ]
        return logged + (["(printed)"] if "Traceback (most recent call last)" in self.log() else [])

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server ignored SIGTERM for {timeout}s:\n{self.log()}") from None


def start_server(
    model: Path | str,
    log_dir: Path,
    args: Sequence[str] = (),
    env_overrides: Mapping[str, str] | None = None,
    metrics_port: bool = True,
    rlimit_nofile: int | None = None,
    fresh: bool = False,
) -> ServerProcess:
    """Start ``python -m flux_server`` on free ports; ``metrics_port=False`` leaves
    ``--metrics-port`` at its default (none: /metrics only on the REST port);
    ``rlimit_nofile``: the server's file descriptor limit (soft and hard).

    The server is forked from a process that has imported it already (``forked.py``),
    which saves each test server ~7 s of imports and list compiling; ``fresh=True``
    execs a new interpreter instead, for what tests the process's own start. A queue
    front is always exec'd: it must show that it never imports torch."""
    http_port, grpc_port = free_port(), free_port()
    metrics = free_port() if metrics_port else 0
    log_path = log_dir / f"server-{http_port}.log"
    command = [
        sys.executable, "-m", "flux_server",
        "--model", str(model),
        "--host", "127.0.0.1",
        "--http-port", str(http_port),
        "--grpc-port", str(grpc_port),
        *(["--metrics-port", str(metrics)] if metrics else []),
        "--release", "v0.0.0-test",
        "--default-width", "64", "--default-height", "64", "--default-steps", "2",
        *args,
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
    base["HF_HUB_OFFLINE"] = "1"
    env = {**base, **(env_overrides or {})}

    if not fresh and not _is_front(args, env) and _read_after_import(env_overrides or {}):
        from forked import zygote

        log_path.write_bytes(b"")
        process: Any = zygote(base).fork(command[3:], env, log_path, rlimit_nofile)
        return ServerProcess(process, http_port, grpc_port, metrics, log_path)

    def limits() -> None:
        if rlimit_nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (rlimit_nofile, rlimit_nofile))

    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limits if rlimit_nofile is not None else None,
        )
    return ServerProcess(process, http_port, grpc_port, metrics, log_path)


# Variables a server reads once it runs (settings, its pod name, storage credentials);
# any other (HF_HUB_OFFLINE, HF_ENDPOINT) may be read at import, so such a server is
# exec'd. OMP_NUM_THREADS is applied by the fork (server_zygote.py).
_AFTER_IMPORT = ("FLUXSERVE_", "POD_NAME", "AWS_", "OMP_NUM_THREADS")


def _read_after_import(overrides: Mapping[str, str]) -> bool:
    return all(name.startswith(_AFTER_IMPORT) for name in overrides)


def _is_front(args: Sequence[str], env: Mapping[str, str]) -> bool:
    pairs = itertools.pairwise(args)
    return env.get("FLUXSERVE_ROLE") == "front" or ("--role", "front") in pairs


def add_key(key_file: Path, user: str = "alice") -> str:
    """Add a key for ``user`` to ``key_file`` with the real ``keys add`` command; the key."""
    import contextlib
    import io

    from flux_server.admission import keys

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert keys.main(["add", user, "--file", str(key_file)]) == 0
    return next(word for word in out.getvalue().split() if word.startswith("fxs_"))


GRPC_BIG = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]
"""Client channel options for messages past gRPC's default 4 MiB."""


def unthrottled_keyed_server(
    factory: Callable[..., ServerProcess], model: Path, key_dir: Path, max_body_bytes: int
) -> ServerProcess:
    """A server from ``factory`` (the ``server_factory`` fixture) that needs a key and
    takes bodies up to ``max_body_bytes``, with the failed-auth throttle off: what the
    memory tests measure is the unthrottled path."""
    key_file = key_dir / "keys"
    add_key(key_file)
    return factory(
        model,
        ["--api-keys", str(key_file), "--max-body-bytes", str(max_body_bytes),
         "--failed-auth-burst", "0"],
    )  # fmt: skip


def wait_rss_within(pid: int, baseline: int, margin: int, timeout: float, seen: str) -> None:
    """Poll until the process's RSS is within ``margin`` bytes of ``baseline``; fail
    after ``timeout`` seconds, saying what was ``seen`` meanwhile."""
    import psutil

    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while (now := process.memory_info().rss) > baseline + margin:
        assert time.monotonic() < deadline, (
            f"RSS before {baseline >> 20} MiB, {seen}, now {now >> 20} MiB "
            f"(margin {margin >> 20} MiB)"
        )
        time.sleep(0.2)

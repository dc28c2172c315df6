"""Test servers forked from a preloaded process (``server_zygote.py``): the test side.

:class:`Forked` answers what the tests ask of a ``subprocess.Popen`` (``pid``, ``poll``,
``wait``, ``send_signal``, ``terminate``, ``kill``, ``returncode``), so a server started
either way is driven the same. One zygote per test process, started on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ZYGOTE = Path(__file__).with_name("server_zygote.py")


class Zygote:
    """``env``: what the zygote imports under (the servers' environment before their own
    variables), since a library may read a variable at import."""

    def __init__(self, env: Mapping[str, str]) -> None:
        # Its own output (the libraries' import-time warnings) goes to a file, read back
        # only if it fails to start.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (open while the zygote runs)
        self._process = subprocess.Popen(
            [sys.executable, str(ZYGOTE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=dict(env),
        )
        self._lock = threading.Lock()  # one request at a time: replies come in order
        self._changed = threading.Condition()
        self._started: list[int] = []
        self._codes: dict[int, int] = {}
        self._alive = True
        assert self._process.stdout is not None
        first = json.loads(self._process.stdout.readline() or b'{"failed": 1}')
        if "preloaded" not in first:
            self._stderr.seek(0)
            said = self._stderr.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"the server zygote exited with {self._process.wait()}:\n{said}")
        threading.Thread(target=self._read, name="zygote-events", daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            event = json.loads(line)
            with self._changed:
                if "started" in event:
                    self._started.append(int(event["started"]))
                else:
                    self._codes[int(event["exited"])] = int(event["code"])
                self._changed.notify_all()
        with self._changed:
            self._alive = False
            self._changed.notify_all()

    def fork(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        rlimit_nofile: int | None,
    ) -> Forked:
        request = {
            "argv": list(argv),
            "env": dict(env),
            "cwd": os.getcwd(),
            "log": str(log),
            "rlimit_nofile": rlimit_nofile,
        }
        assert self._process.stdin is not None
        with self._lock:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            with self._changed:
                self._changed.wait_for(lambda: self._started or not self._alive, timeout=30)
                if not self._started:
                    raise RuntimeError("the server zygote did not fork")
                pid = self._started.pop(0)
        return Forked(self, pid, list(argv))

    def code(self, pid: int, timeout: float | None) -> int | None:
        """The child's exit code once it exited, waiting up to ``timeout`` s (0: not at all).
        Raises RuntimeError when the zygote has gone: no exit code will come."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._codes or not self._alive, timeout)
            if pid not in self._codes and not self._alive:
                raise RuntimeError(f"the server zygote exited; server {pid}'s end is unknown")
            return self._codes.get(pid)


class Forked:
    """A forked server, driven like the ``Popen`` of an exec'd one."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str]) -> None:
        self._zygote = zygote
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._zygote.code(self.pid, 0.5 if left is None else min(left, 0.5))
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def zygote(env: Mapping[str, str]) -> Zygote:
    """This test process's zygote, started (a few seconds) under ``env`` on first use."""
    global _zygote
    with _zygote_lock:
        if _zygote is None:
            _zygote = Zygote(env)
        return _zygote

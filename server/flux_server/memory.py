"""Handing freed memory back to the system after large requests.

glibc keeps what a process frees in its arenas, and gRPC receives a message on several
threads (several arenas): after a burst of large messages the freed buffers stay in the
process, and the next burst, split differently, adds to them. ``malloc_trim(0)`` returns
the free pages of every arena. It walks the arenas (milliseconds), so it runs off the
event loop, at most once per ``interval`` seconds, and only after a large message.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

LARGE_MESSAGE_BYTES = 1024 * 1024
"""A request at least this large schedules a trim when it ends."""


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim``, or None on another C library (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


MALLOC_TRIM = _malloc_trim()


class Trimmer:
    """Schedules ``malloc_trim`` after large requests, debounced, ending with a trim at
    least ``interval`` seconds after the last one.

    The trailing trim matters: gRPC frees a message's buffers after the call's done
    callback, so a trim that runs just as a burst ends can miss the last calls' buffers,
    and with nothing after it they would stay in the process."""

    TRAILING = 2
    """Trims still owed after a large request: the next one, and one a full interval on."""

    def __init__(
        self, interval: float = 0.5, trim: Callable[[], object] | None = MALLOC_TRIM
    ) -> None:
        self.interval = interval
        self._trim = trim
        self._pending = False
        self._owed = 0
        self._last = 0.0

    def after(self, size: int) -> None:
        """A request of ``size`` bytes has been handled (call on the event loop)."""
        if self._trim is None or size < LARGE_MESSAGE_BYTES:
            return
        self._owed = self.TRAILING
        if not self._pending:
            self._schedule()

    def _schedule(self) -> None:
        self._pending = True
        delay = max(0.0, self._last + self.interval - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._run)

    def _run(self) -> None:
        self._pending = False
        self._last = time.monotonic()
        self._owed -= 1
        assert self._trim is not None
        asyncio.get_running_loop().run_in_executor(None, self._trim)
        if self._owed > 0:
            self._schedule()

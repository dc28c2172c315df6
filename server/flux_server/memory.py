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


class Trimmer:
    """Schedules ``malloc_trim`` after large requests, debounced."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._trim = _malloc_trim()
        self._pending = False
        self._last = 0.0

    def after(self, size: int) -> None:
        """A request of ``size`` bytes has been handled (call on the event loop)."""
        if self._trim is None or size < LARGE_MESSAGE_BYTES or self._pending:
            return
        self._pending = True
        delay = max(0.0, self._last + self.interval - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._run)

    def _run(self) -> None:
        self._pending = False
        self._last = time.monotonic()
        assert self._trim is not None
        asyncio.get_running_loop().run_in_executor(None, self._trim)

"""The background event loop the blocking client (``FluxModelClient``) and its job
handles (``Job``) run the asyncio client's coroutines on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

R = TypeVar("R")
Y = TypeVar("Y")


class LoopThread:
    """An event loop running in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="flux-client", daemon=True
                )
                self._thread.start()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        future: Future[R] = asyncio.run_coroutine_threadsafe(coro, self._running_loop())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller's thread ends the call too
            raise

    def iterate(self, iterator: AsyncIterator[Y]) -> Iterator[Y]:
        try:
            while True:
                try:
                    yield self.run(_next(iterator))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                self.run(aclose())

    @property
    def started(self) -> bool:
        return self._loop is not None

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


async def _next(iterator: AsyncIterator[Y]) -> Y:
    return await anext(iterator)

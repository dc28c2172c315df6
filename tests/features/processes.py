"""Several real server processes for one test module: started together (their loading
overlaps), all ready before the tests, all stopped after, whatever happened."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from server_process import ServerProcess


@contextmanager
def all_ready(procs: Mapping[str, ServerProcess], timeout: float = 400) -> Iterator[None]:
    try:
        for proc in procs.values():
            proc.wait_ready(timeout=timeout)
        yield
    finally:
        for proc in procs.values():
            if proc.process.poll() is None:
                proc.process.kill()
            proc.process.wait()

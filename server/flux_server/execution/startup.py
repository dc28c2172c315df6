"""A start, timed phase by phase: ``download`` (the weights made local), ``load`` (read
and placed on the device, adapters and the extra models included), ``compile`` (the
compile cache read, and every warm-up call that built a torch.compile graph, and the
cache written) and ``warmup`` (the warm-up calls that built none).

Each phase is reported once, when it is over: one structured log line, and the callback
the runner turns into ``fluxserve_startup_seconds{phase}``. Their sum is the time from
the first byte to the first image the process made (imports and scheduling aside).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PHASES = ("download", "load", "compile", "warmup")


class StartupPhases:
    """Seconds per phase of this process's start; ``on_done(phase, seconds)`` is called
    when a phase is reported."""

    def __init__(self, on_done: Callable[[str, float], None] | None = None) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.reported: list[str] = []
        self._on_done = on_done

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time the block takes to ``phase`` (several blocks may add to one)."""
        if phase not in self.seconds:
            raise ValueError(f"unknown start phase {phase!r} (one of {', '.join(PHASES)})")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started

    def done(self, phase: str, **detail: Any) -> None:
        """Report ``phase`` (once): a log line with its seconds and ``detail``."""
        if phase in self.reported:
            return
        self.reported.append(phase)
        seconds = self.seconds[phase]
        log.info(
            "start phase done",
            extra={"phase": phase, "seconds": round(seconds, 3), **detail},
        )
        if self._on_done is not None:
            self._on_done(phase, seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def fetch_weights(model: str, revision: str | None) -> tuple[str, str]:
    """(a local directory holding the pipeline, where it came from): a directory as it
    is (a node cache, an image volume), else the hub's files for this pipeline only
    (diffusers' own selection, into the hub cache; ``HF_HUB_OFFLINE`` reads the cache)."""
    if Path(model).is_dir():
        return model, "directory"
    from diffusers import FluxPipeline

    return str(FluxPipeline.download(model, revision=revision)), "hub"

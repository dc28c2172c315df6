"""Cancelling a job that is already inside a pipeline call.

The event loop sets a job's :class:`CancelToken`; the engine thread reads it in
diffusers' ``callback_on_step_end`` (``should_stop`` of ``Engine.generate`` and
``Editor.run_batch``), so a running job stops after the denoising step in progress and
the GPU is free within one step. A token is a ``threading.Event``: set from the loop,
read from the worker thread, no lock of ours.

A batch whose members are cancelled one by one
----------------------------------------------
One pipeline call runs every image of a batch in lockstep as rows of one tensor. When
only some members are cancelled, :class:`BatchCancellation` lets the call run on and
the caller discards the cancelled members' images; the call is interrupted only once
*every* member is cancelled. Why not split the batch:

* Removing rows mid-call would mean slicing the latents *and* every batch-sized
  conditioning tensor (prompt embeddings, pooled embeddings, guidance); the step
  callback may only replace the tensors the pipeline lists in
  ``_callback_tensor_inputs``, so this would fork the pipeline's loop, which we never do.
* Interrupting and re-running the mates throws away the steps they have done: their
  latency would grow by up to a whole call, to save a fraction of one.
* Letting them finish costs only the cancelled rows' share of the remaining steps
  (at most ``(n-1)/n`` of the call when all but one are cancelled), keeps the mates'
  latency as it was, and their images bit-for-bit what they would have been (one
  generator per image).

The cancelled job is told ``canceled`` at once either way: its outcome does not wait
for the batch, and whatever the call produces for it is dropped, never delivered.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class GenerationInterrupted(Exception):
    """The engine stopped a pipeline call because every job in it was cancelled."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"generation cancelled after step {step} of {total}")
        self.step = step
        self.total = total


class CancelToken:
    """One job's cancel flag: set on the event loop, read on the engine thread."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class BatchCancellation:
    """The cancel state of the jobs in one pipeline call, in batch order. A member
    without a token (a synchronous request) is never cancelled this way: its caller
    going away is handled as today."""

    def __init__(self, tokens: Sequence[CancelToken | None]) -> None:
        self.tokens = tuple(tokens)

    def should_stop(self) -> bool:
        """True when the call may stop: every member is cancelled (``Engine.generate``
        asks after each step)."""
        return bool(self.tokens) and all(t is not None and t.cancelled for t in self.tokens)

    def cancelled_members(self) -> list[int]:
        """Indexes of the members whose results must be discarded."""
        return [i for i, t in enumerate(self.tokens) if t is not None and t.cancelled]

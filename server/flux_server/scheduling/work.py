"""What waits in the queue: a generation, an edit or a question (the kinds of
:class:`Work`), and what a batch gives back for each (:class:`Made`).

Generations, edits and questions share one queue (one accelerator), so they share its
backpressure, lane and deadlines. Each kind says which work may share its pipeline call
(``key``), how much of a batch it fills (``units``) and how many denoising steps its
call runs (``steps``); the runner turns a batch of one kind into engine calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from PIL import Image

from flux_server.execution.cancellation import CancelToken
from flux_server.execution.edit_job import EditJob, batch_key, denoising_steps
from flux_server.execution.inputs import ProgressFn
from flux_server.execution.previews import PreviewFn
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage

WorkKind = Literal["generate", "edit", "vqa"]


@dataclass(frozen=True)
class Made:
    """What one piece of work got from its batch: images (a generation, an edit) or an
    answer (a question)."""

    images: list[GeneratedImage] = field(default_factory=list)
    answer: str = ""


@dataclass(eq=False, kw_only=True)
class Work:
    """One request in the scheduler."""

    kind: ClassVar[WorkKind]
    request_id: str
    output_format: str = "png"
    progress: ProgressFn | None = None
    loop: asyncio.AbstractEventLoop | None = None
    # An async job's: cancelled by its id (stops its pipeline call once every member of
    # the call is cancelled), and told when its batch starts.
    token: CancelToken | None = None
    job_id: str | None = None
    on_start: Callable[[], Awaitable[None]] | None = None
    # Live previews: asked for (``previews: true``), and who hears them (on ``loop``).
    previews: bool = False
    preview: PreviewFn | None = None
    # --queue: an edit's or a question's own entry fields (kind, upload), see
    # flux_server.queue.uploads; None for a generation (its request says everything).
    fleet_entry: dict[str, Any] | None = None

    def key(self) -> tuple[object, ...]:
        """Work with equal keys may run in one pipeline call (the kind comes first)."""
        raise NotImplementedError

    @property
    def units(self) -> int:
        """How much of a batch's ``--max-batch-size`` it takes: its images."""
        return 1

    @property
    def steps(self) -> int:
        """The denoising steps its pipeline call runs (none for a question)."""
        return 0

    def describe(self) -> tuple[str, int]:
        """Its size (``WxH``) and images, for the message of a failed call."""
        return "?x?", 1


@dataclass(eq=False, kw_only=True)
class Generation(Work):
    kind: ClassVar[WorkKind] = "generate"
    request: ResolvedRequest

    def key(self) -> tuple[object, ...]:
        return ("generate", *self.request.batch_key())

    @property
    def units(self) -> int:
        return self.request.num_images

    @property
    def steps(self) -> int:
        return self.request.steps

    def describe(self) -> tuple[str, int]:
        return f"{self.request.width}x{self.request.height}", self.request.num_images


@dataclass(eq=False, kw_only=True)
class Edit(Work):
    kind: ClassVar[WorkKind] = "edit"
    job: EditJob

    def key(self) -> tuple[object, ...]:
        return ("edit", *batch_key(self.job))

    @property
    def units(self) -> int:
        return self.job.num_images

    @property
    def steps(self) -> int:
        """An img2img edit runs only the last ``strength`` of its schedule."""
        return denoising_steps(self.job)

    def describe(self) -> tuple[str, int]:
        width, height = self.job.size
        return f"{width}x{height}", self.job.num_images


@dataclass(eq=False, kw_only=True)
class Question(Work):
    kind: ClassVar[WorkKind] = "vqa"
    image: Image.Image
    question: str
    max_tokens: int

    def key(self) -> tuple[object, ...]:
        return ("vqa", id(self))  # answered one at a time


W = TypeVar("W", bound=Work)


def members(works: Sequence[Work], kind: type[W]) -> list[W]:
    """The works of a batch as their kind: a batch holds one kind (its key starts with
    the kind), and a batch that does not is a scheduler bug, said so."""
    found = [work for work in works if isinstance(work, kind)]
    if len(found) != len(works):
        raise TypeError(f"a batch of {kind.__name__} holds other kinds of work")
    return found

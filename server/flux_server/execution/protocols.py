"""The shapes of the editor and the VQA model, as Protocols: what the runner needs of
them (``Runner.load`` builds the concrete classes); a test or another backend only has
to fit the shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from flux_server.execution.edit_job import EditJob, EditResult
    from flux_server.execution.inputs import ProgressFn, StopFn
    from flux_server.execution.step_hooks import StepHook


class ImageEditor(Protocol):
    """Edits images on the generator's weights (:class:`flux_server.execution.editor.Editor`)."""

    @property
    def can_instruct(self) -> bool: ...

    def run_batch(
        self,
        jobs: Sequence[EditJob],
        on_step: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        hooks: Sequence[StepHook] = (),
    ) -> list[EditResult]: ...


class QuestionAnswerer(Protocol):
    """Answers questions about images (:class:`flux_server.execution.vqa.VqaModel`)."""

    def check(self, question: str, max_tokens: int) -> None:
        """Raise :class:`~flux_server.execution.inputs.InputRejected` for what this model
        cannot take (asked before queueing)."""
        ...

    def answer(self, image: Image.Image, question: str, max_tokens: int = ...) -> str: ...

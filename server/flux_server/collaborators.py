"""The shapes of the core's collaborators, as Protocols: what admission and the runner
need of the keys, the content policy, the audit log, the result cache, the editor and
the VQA model. The settings choose the concrete classes (``Admission.from_settings``,
``Runner.load``); a test or another backend only has to fit the shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from flux_server.cache import ResultCache

if TYPE_CHECKING:
    from PIL import Image

    from flux_server.audit import AuditRecord
    from flux_server.auth import Principal
    from flux_server.editing import EditJob, EditResult, StepCallback
    from flux_server.safety import SafetyDecision

__all__ = [
    "AuditSink",
    "ContentPolicy",
    "ImageEditor",
    "KeyChecker",
    "QuestionAnswerer",
    "ResultCache",
]


class KeyChecker(Protocol):
    """The API keys (:class:`flux_server.auth.KeyStore`)."""

    def reload_if_changed(self) -> bool: ...

    def authenticate(self, token: str | None) -> Principal | None: ...


class ContentPolicy(Protocol):
    """The prompt safety filter (:class:`flux_server.safety.SafetyFilter`). ``classifier``
    is set when a model takes part: its checks leave the event loop."""

    @property
    def classifier(self) -> object | None: ...

    def check(self, text: str) -> SafetyDecision: ...


class AuditSink(Protocol):
    """Where audit lines go (:class:`flux_server.audit.AuditLog`)."""

    def record(self, record: AuditRecord) -> None:
        """Write one line; raises ``OSError`` when it could not be written."""
        ...

    def healthy(self) -> bool:
        """Whether lines can be written (tries again after a failure)."""
        ...

    def close(self) -> None: ...


class ImageEditor(Protocol):
    """Edits images on the generator's weights (:class:`flux_server.editor.Editor`)."""

    @property
    def can_instruct(self) -> bool: ...

    def run_batch(
        self,
        jobs: Sequence[EditJob],
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[EditResult]: ...


class QuestionAnswerer(Protocol):
    """Answers questions about images (:class:`flux_server.vqa.VqaModel`)."""

    def check(self, question: str, max_tokens: int) -> None:
        """Raise a request error for what this model cannot take (before queueing)."""
        ...

    def answer(self, image: Image.Image, question: str, max_tokens: int = ...) -> str: ...

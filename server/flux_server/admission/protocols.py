"""The shapes of admission's collaborators, as Protocols: what it needs of the keys, the
content policy, the audit log and the result cache. The settings choose the concrete
classes (``Admission.from_settings``); a test or another backend only has to fit the
shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from flux_server.admission.cache import ResultCache

if TYPE_CHECKING:
    from flux_server.admission.audit import AuditRecord
    from flux_server.admission.auth import Principal
    from flux_server.admission.safety import SafetyDecision

__all__ = [
    "AuditSink",
    "ContentPolicy",
    "KeyChecker",
    "ResultCache",
]


class KeyChecker(Protocol):
    """The API keys (:class:`flux_server.admission.auth.KeyStore`)."""

    def reload_if_changed(self) -> bool: ...

    def authenticate(self, token: str | None) -> Principal | None: ...


class ContentPolicy(Protocol):
    """The prompt safety filter (:class:`flux_server.admission.safety.SafetyFilter`). ``classifier``
    is set when a model takes part: its checks leave the event loop."""

    @property
    def classifier(self) -> object | None: ...

    def check(self, text: str) -> SafetyDecision: ...


class AuditSink(Protocol):
    """Where audit lines go (:class:`flux_server.admission.audit.AuditLog`)."""

    def record(self, record: AuditRecord) -> None:
        """Write one line; raises ``OSError`` when it could not be written."""
        ...

    def healthy(self) -> bool:
        """Whether lines can be written (tries again after a failure)."""
        ...

    def close(self) -> None: ...

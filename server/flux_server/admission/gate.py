"""The one way in: what every request (generation, edit, question) passes before it may
queue, in the same order, and the audit line of how it ended.

    ready → key (priority downgraded without the permission) → [the operation resolves
    its request] → content policy → [cache lookup, for generations]

:meth:`Admission.request` wraps a whole call: whatever :class:`ServeError` ends it, the
audit log gets one line (:mod:`flux_server.admission.audit_lines` builds it). The settings
choose the collaborators (:mod:`flux_server.admission.parts`); their shapes are in
:mod:`flux_server.admission.protocols`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, Literal

from flux_server.admission.audit import AuditRecord
from flux_server.admission.audit_lines import Decision, Trail, audit_record, refusal_of
from flux_server.admission.auth import Principal, bearer_token
from flux_server.admission.auth_failures import AuthThrottled, FailedAuthAudit, FailureThrottle
from flux_server.admission.cache import cache_key
from flux_server.admission.parts import Parts, parts_from_settings
from flux_server.admission.result_blob import images_from_blob, images_to_blob
from flux_server.admission.safety import SafetyDecision
from flux_server.errors import (
    ContentRejected,
    PermissionDenied,
    ServeError,
    Unauthenticated,
    Unavailable,
    status_of,
)
from flux_server.metrics import Metrics
from flux_server.requests.context import CallContext, OffLoop
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.settings import ServerSettings

__all__ = ["Admission", "Trail", "refusal_of"]

log = logging.getLogger(__name__)


class Admission:
    """Readiness, keys, the content policy, the audit log and the result cache."""

    def __init__(
        self, settings: ServerSettings, metrics: Metrics, parts: Parts, off_loop: OffLoop
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys, self.safety = parts.keys, parts.safety
        self.audit, self.cache = parts.audit, parts.cache
        self._off_loop = off_loop
        s = settings
        self.throttle = (
            FailureThrottle(s.failed_auth_burst, s.failed_auth_rate)
            if s.failed_auth_burst > 0
            else None
        )
        self.failed_auth = (
            FailedAuthAudit(self._write_refusal, s.audit_failed_auth_interval)
            if parts.audit is not None
            else None
        )
        self.loaded = False  # the model is loaded and warm
        self.draining = False

    @classmethod
    def from_settings(
        cls, settings: ServerSettings, metrics: Metrics, off_loop: OffLoop
    ) -> Admission:
        """The collaborators the settings switch on (:mod:`flux_server.admission.parts`);
        a bad file fails start-up, before minutes of loading the model."""
        return cls(settings, metrics, parts_from_settings(settings, metrics), off_loop)

    @property
    def ready(self) -> bool:
        """Loaded, not draining, and the audit log (when on) takes lines: a replica that
        cannot record requests must not get any."""
        return self.loaded and not self.draining and self.audit_ok()

    def audit_ok(self) -> bool:
        return self.audit is None or self.audit.healthy()

    async def close(self) -> None:
        if self.failed_auth is not None:
            self.failed_auth.flush()
        if self.cache is not None:
            await self.cache.close()
        if self.audit is not None:
            self.audit.close()

    # -- the steps, in order ---------------------------------------------------------------

    @asynccontextmanager
    async def request(
        self, ctx: CallContext, prompt: str | None = None, params: dict[str, Any] | None = None
    ) -> AsyncIterator[Trail]:
        """The trail of one call; a :class:`ServeError` that ends it (refused, timed out,
        shed, failed) gets its audit line, then goes on to the adapter."""
        trail = Trail(ctx, prompt=prompt, params=params)
        try:
            yield trail
        except ServeError as error:
            self.count_refusal(error)
            self._record_error(trail, error, outcome="failed" if trail.admitted else None)
            raise

    def count_refusal(self, error: ServeError) -> None:
        """Count a refusal of the images a request made (``image_classifier``): a refused
        prompt is counted where it is screened."""
        if isinstance(error, ContentRejected) and error.refusal == "image_classifier":
            self.metrics.safety_rejections.labels(reason=error.refusal).inc()

    def admit(self, trail: Trail) -> None:
        """Ready, and a valid key: the caller's user and lane go on the trail."""
        if self.draining:
            raise Unavailable("the server is draining; retry on another replica")
        if not self.loaded:
            raise Unavailable("the model is still loading; retry shortly")
        if not self.audit_ok():
            raise Unavailable(_AUDIT_DOWN)
        principal, trail.ctx = self.authenticate(trail.ctx)
        trail.user = principal.user if principal is not None else None

    def authenticate(self, ctx: CallContext) -> tuple[Principal | None, CallContext]:
        """The caller's principal (None on an open server) and the context to serve the
        request with: a caller whose key lacks the ``priority`` permission is served in
        the normal lane, and the downgrade is logged (server log and audit log); with
        ``--priority-without-permission refuse`` it is refused (403)."""
        if self.keys is None:
            return None, ctx
        if self.throttle is not None and (wait := self.throttle.retry_after(ctx.client)):
            raise AuthThrottled(wait)  # before the key: a throttled address tries none
        self.keys.reload_if_changed()
        token = bearer_token(ctx.authorization)
        principal = self.keys.authenticate(token) if token is not None else None
        if principal is None:
            if self.throttle is not None:
                self.throttle.failed(ctx.client)
            if token is None:
                raise Unauthenticated(
                    "an API key is required: send 'authorization: Bearer <key>'",
                    "authorization",
                )
            raise Unauthenticated("the API key is not valid", "authorization")
        if ctx.priority and not principal.can_priority:
            if self.settings.priority_without_permission == "refuse":
                raise PermissionDenied(
                    "the API key has no priority permission: send the request without "
                    "high priority, or use a key with it (keys add --priority)",
                    "priority",
                )
            log.warning(
                "priority lane denied: the key has no priority permission; "
                "served in the normal lane",
                extra={"request_id": ctx.request_id, "user": principal.user},
            )
            ctx = replace(ctx, priority=False, priority_denied=True)
        return principal, ctx

    async def screen(self, trail: Trail, text: str, field: Literal["prompt", "question"]) -> None:
        """The content policy on ``text``; a refusal is counted, audited with what matched,
        and raised as :class:`ContentRejected` naming ``field``."""
        decision = await self._decide(text)
        if decision.allowed:
            return
        reason = decision.reason or "unknown"
        self.metrics.safety_rejections.labels(reason=reason).inc()
        if self.audit is not None:
            record = audit_record(trail, "rejected", reason, 400, detail=decision.matched)
            self._write_refusal(record)
        log.warning(
            f"{field} rejected",
            extra={"request_id": trail.ctx.request_id, "user": trail.user, "reason": reason},
        )
        error = ContentRejected(f"the {field} was refused by the content policy ({reason})", field)
        error.audited = True
        raise error

    async def _decide(self, text: str) -> SafetyDecision:
        # Off the event loop always: the lists take ~0.3 ms on a usual prompt but up to
        # ~50 ms on a hostile 2,000-character one, and a classifier model far longer.
        decision: SafetyDecision = await self._off_loop(self.safety.check, text)
        return decision

    def cache_key(
        self, job: ResolvedRequest, *, seeded: bool, adapter_versions: dict[str, str]
    ) -> str | None:
        """The job's result cache key, or None when there is no cache. The adapters'
        weight digests are part of it: new weights under an old name miss."""
        if self.cache is None:
            return None
        s = self.settings
        return cache_key(
            job,
            model=s.model,
            revision=s.model_revision,
            release=s.release,
            adapters=dict(job.adapters),
            seeded=seeded,
            adapter_versions=adapter_versions,
        )

    async def lookup(self, key: str | None) -> list[GeneratedImage] | None:
        """The cached images under ``key`` (counted as a hit or a miss), or None."""
        if key is None or self.cache is None:
            return None
        cached = await self.cache.get(key)
        if cached is None:
            self.metrics.cache_misses.inc()
            return None
        self.metrics.cache_hits.inc()
        return images_from_blob(cached)

    async def store(self, key: str | None, images: list[GeneratedImage]) -> None:
        if key is not None and self.cache is not None:
            await self.cache.set(key, images_to_blob(images))

    # -- the audit log ---------------------------------------------------------------------

    def accepted(self, trail: Trail, *, cache_hit: bool = False) -> None:
        """The audit line of an admitted request, written BEFORE it is queued or answered
        from the cache: a line that cannot be written refuses the request (503), so no
        image is ever made or sent without its record. Its latency is the admission's, its
        outcome "accepted" and it has no status: the answer is not known yet. A request
        that then fails gets a second line with the error, outcome "failed"."""
        if self.audit is None:
            return
        record = audit_record(trail, "accepted", latency_ms=trail.elapsed_ms, cache_hit=cache_hit)
        record.outcome = "accepted"
        self._write_required(record)
        trail.admitted = True

    def job_event(
        self,
        trail: Trail,
        job_id: str,
        decision: Decision,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """The audit line of an async job's submission (202), cancel or outcome."""
        if self.audit is None:
            return
        status = 202 if decision == "submitted" else None
        record = audit_record(
            trail, decision, reason, status, detail=detail, latency_ms=trail.elapsed_ms
        )
        record.job_id = job_id
        if decision != "submitted":
            self._write_refusal(record)  # cancel and outcome: the work is done or undone
            return
        self._write_required(record)  # as for a synchronous request (see accepted())

    def refused(self, ctx: CallContext, error: ServeError, status: int) -> None:
        """Record a request the API adapters answered with an error and the core has not
        recorded (a body that does not parse, a refused key): every request gets a line."""
        self._record_error(Trail(ctx), error, status=status)

    def _record_error(
        self,
        trail: Trail,
        error: ServeError,
        status: int | None = None,
        outcome: Literal["failed"] | None = None,
    ) -> None:
        """One line for a request that ended in an error, unless it has one already (a
        refused prompt is recorded where it is refused, with what matched); ``outcome``
        "failed" for one admitted before."""
        if self.audit is None or error.audited:
            return
        if self.failed_auth is not None and isinstance(error, Unauthenticated | AuthThrottled):
            # Summed up per address and interval (see flux_server.admission.auth_failures).
            self.failed_auth.note(trail.ctx, throttled=isinstance(error, AuthThrottled))
            error.audited = True
            return
        reason, detail = refusal_of(error)
        status = status if status is not None else status_of(error).http
        record = audit_record(trail, "rejected", reason, status, detail=detail)
        record.outcome = outcome
        self._write_refusal(record)
        error.audited = True

    def _write_required(self, record: AuditRecord) -> None:
        """The line of work about to be done: one that cannot be written refuses the work
        (503), so nothing is made or sent without its record."""
        assert self.audit is not None
        try:
            self.audit.record(record)
        except OSError:
            error = Unavailable(_AUDIT_DOWN)
            error.audited = True  # it could not be: the log is what failed
            raise error from None

    def _write_refusal(self, record: AuditRecord) -> None:
        """The line of a refused request: a refusal does no work, so a line that cannot be
        written leaves the caller's answer as it is (counted and logged by the log)."""
        assert self.audit is not None
        with suppress(OSError):
            self.audit.record(record)


_AUDIT_DOWN = "the audit log cannot be written; retry on another replica"

"""The one way in: what every request (generation, edit, question) passes before it may
queue, in the same order, and the audit line of how it ended.

    ready → key (priority downgraded without the permission) → [the operation resolves
    its request] → content policy → [cache lookup, for generations]

:meth:`Admission.request` wraps a whole call: whatever :class:`ServeError` ends it, the
audit log gets one line. The settings choose the collaborators in
:meth:`Admission.from_settings`; their shapes are in :mod:`flux_server.admission.protocols`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from flux_server.admission.audit import AuditRecord
from flux_server.admission.audit_lines import audit_record
from flux_server.admission.auth import Principal, bearer_token
from flux_server.admission.auth_failures import AuthThrottled, FailedAuthAudit, FailureThrottle
from flux_server.admission.cache import build_cache, cache_key
from flux_server.admission.protocols import AuditSink, ContentPolicy, KeyChecker, ResultCache
from flux_server.admission.result_blob import images_from_blob, images_to_blob
from flux_server.admission.safety import SAFETY_REASONS, SafetyDecision
from flux_server.errors import (
    ContentRejected,
    PermissionDenied,
    ServeError,
    Unauthenticated,
    Unavailable,
    status_of,
)
from flux_server.experiments.assignment import Assignment
from flux_server.metrics import Metrics
from flux_server.requests.context import CallContext, OffLoop
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.settings import ServerSettings

log = logging.getLogger(__name__)


@dataclass
class Trail:
    """What is known of one request so far, for its audit line whatever the outcome."""

    ctx: CallContext
    started: float = field(default_factory=time.perf_counter)
    user: str | None = None
    job: ResolvedRequest | None = None
    # A request without a generation job (a question): what its audit line records.
    prompt: str | None = None
    params: dict[str, Any] | None = None
    experiment: Assignment | None = None  # the arm serving it, once assigned
    admitted: bool = False  # its "accepted" line is written: an error is its outcome

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class Admission:
    """Readiness, keys, the content policy, the audit log and the result cache."""

    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics,
        *,
        safety: ContentPolicy,
        off_loop: OffLoop,
        keys: KeyChecker | None = None,
        audit: AuditSink | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = keys
        self.safety = safety
        self.audit = audit
        self.cache = cache
        self._off_loop = off_loop
        # Present from the start at 0, so a rate() or an alert sees the series before the
        # first refusal.
        for reason in SAFETY_REASONS:
            metrics.safety_rejections.labels(reason=reason)
        s = settings
        self.throttle = (
            FailureThrottle(s.failed_auth_burst, s.failed_auth_rate)
            if s.failed_auth_burst > 0
            else None
        )
        self.failed_auth = (
            FailedAuthAudit(self._write_refusal, s.audit_failed_auth_interval)
            if audit is not None
            else None
        )
        self.loaded = False  # the model is loaded and warm
        self.draining = False

    @classmethod
    def from_settings(
        cls, settings: ServerSettings, metrics: Metrics, off_loop: OffLoop
    ) -> Admission:
        """The collaborators the settings switch on; a bad file fails start-up, before
        minutes of loading the model."""
        s = settings
        keys: KeyChecker | None = None
        if s.api_keys is not None:
            from flux_server.admission.auth import KeyStore

            keys = KeyStore.from_file(s.api_keys)
        else:
            log.warning(
                "no --api-keys: the server is open, every caller may generate and use the "
                "priority lane"
            )
        if s.lora or s.lora_sha256:
            from flux_server.execution.lora import parse_lora_flags
            from flux_server.execution.lora_source import check_local, parse_sha256_flags

            specs = parse_lora_flags(s.lora)
            parse_sha256_flags(s.lora_sha256, specs)
            check_local(specs)
        from flux_server.admission.safety import SafetyFilter

        # The default blocklist is always on; --blocklist extends it.
        safety = SafetyFilter.from_files(s.blocklist, s.safety_model, threshold=s.safety_threshold)
        audit: AuditSink | None = None
        if s.audit_log is not None:
            from flux_server.admission.audit import AuditLog

            audit_log = AuditLog(s.audit_log, hash_prompts=s.audit_hash_prompts, release=s.release)
            audit_log.on_failure = lambda exc: _audit_failed(metrics, exc)
            metrics.audit_free_bytes.set_function(audit_log.free_bytes)
            audit = audit_log
        cache = build_cache(
            redis_url=s.redis_url,
            cache_bytes=s.cache_bytes,
            ttl=s.cache_ttl,
            on_error=lambda _exc: metrics.cache_errors.inc(),
        )
        return cls(
            settings, metrics, keys=keys, safety=safety, audit=audit, cache=cache, off_loop=off_loop
        )

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
            self._record_error(
                trail.ctx,
                error,
                trail.user,
                trail.job,
                None,
                trail.prompt,
                trail.params,
                experiment=trail.experiment,
                outcome="failed" if trail.admitted else None,
            )
            raise

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
        the normal lane, and the downgrade is logged (server log and audit log)."""
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
            self._write_refusal(
                audit_record(
                    trail.ctx,
                    trail.user,
                    trail.job,
                    "rejected",
                    reason,
                    400,
                    None,
                    detail=decision.matched,
                    prompt=trail.prompt,
                    params=trail.params,
                    experiment=trail.experiment,
                )
            )
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
        record = audit_record(
            trail.ctx,
            trail.user,
            trail.job,
            "accepted",
            None,
            None,
            None,
            prompt=trail.prompt,
            params=trail.params,
            latency_ms=trail.elapsed_ms,
            cache_hit=cache_hit,
            experiment=trail.experiment,
        )
        record.outcome = "accepted"
        self._write_required(record)
        trail.admitted = True

    def job_event(
        self,
        trail: Trail,
        job_id: str,
        decision: Literal["accepted", "rejected", "submitted", "canceled"],
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """The audit line of an async job's submission (202), cancel or outcome."""
        if self.audit is None:
            return
        record = audit_record(
            trail.ctx,
            trail.user,
            trail.job,
            decision,
            reason,
            202 if decision == "submitted" else None,
            None,
            detail=detail,
            experiment=trail.experiment,
        )
        record.job_id = job_id
        record.latency_ms = trail.elapsed_ms
        if decision != "submitted":
            self._write_refusal(record)  # cancel and outcome: the work is done or undone
            return
        self._write_required(record)  # as for a synchronous request (see accepted())

    def refused(self, ctx: CallContext, error: ServeError, status: int) -> None:
        """Record a request the API adapters answered with an error and the core has not
        recorded (a body that does not parse, a refused key): every request gets a line."""
        self._record_error(ctx, error, status=status)

    def _record_error(
        self,
        ctx: CallContext,
        error: ServeError,
        user: str | None = None,
        job: ResolvedRequest | None = None,
        status: int | None = None,
        prompt: str | None = None,
        params: dict[str, Any] | None = None,
        experiment: Assignment | None = None,
        outcome: Literal["failed"] | None = None,
    ) -> None:
        """One line for a request that ended in an error, unless it has one already (a
        refused prompt is recorded where it is refused, with what matched); ``outcome``
        "failed" for one admitted before."""
        if self.audit is None or error.audited:
            return
        if self.failed_auth is not None and isinstance(error, Unauthenticated | AuthThrottled):
            # Summed up per address and interval (see flux_server.admission.auth_failures).
            self.failed_auth.note(ctx, throttled=isinstance(error, AuthThrottled))
            error.audited = True
            return
        reason = {Unauthenticated: "unauthenticated", PermissionDenied: "priority_denied"}.get(
            type(error), error.code
        )
        status = status if status is not None else status_of(error).http
        record = audit_record(
            ctx,
            user,
            job,
            "rejected",
            reason,
            status,
            None,
            detail=error.message,
            prompt=prompt,
            params=params,
            experiment=experiment,
        )
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


def _audit_failed(metrics: Metrics, exc: OSError) -> None:
    metrics.audit_write_failures.inc()
    log.error("audit line not written", extra={"error": str(exc)})

"""The admission's collaborators as the settings choose them: the key store, the content
policy, the audit log and the result cache. Every file they read is read here, at start:
a bad one fails start-up, before minutes of loading the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flux_server.admission.cache import build_cache
from flux_server.admission.protocols import AuditSink, ContentPolicy, KeyChecker, ResultCache
from flux_server.metrics import Metrics
from flux_server.settings import ServerSettings

# The admission's own logger: these lines are the admission's.
log = logging.getLogger("flux_server.admission.gate")


@dataclass(frozen=True)
class Parts:
    """What :class:`~flux_server.admission.gate.Admission` consults; None: switched off."""

    safety: ContentPolicy
    keys: KeyChecker | None = None
    audit: AuditSink | None = None
    cache: ResultCache | None = None


def parts_from_settings(settings: ServerSettings, metrics: Metrics) -> Parts:
    """The collaborators the settings switch on (the default blocklist always)."""
    s = settings
    keys = _keys(s)
    _check_adapters(s)
    from flux_server.admission.safety import SafetyFilter

    # The default blocklist is always on; --blocklist extends it.
    safety = SafetyFilter.from_files(s.blocklist, s.safety_model, threshold=s.safety_threshold)
    audit = _audit_log(s, metrics)
    cache = build_cache(
        redis_url=s.redis_url,
        cache_bytes=s.cache_bytes,
        ttl=s.cache_ttl,
        on_error=lambda _exc: metrics.cache_errors.inc(),
    )
    return Parts(safety=safety, keys=keys, audit=audit, cache=cache)


def _keys(s: ServerSettings) -> KeyChecker | None:
    if s.api_keys is None:
        log.warning(
            "no --api-keys: the server is open, every caller may generate and use the priority lane"
        )
        return None
    from flux_server.admission.auth import KeyStore

    return KeyStore.from_file(s.api_keys)


def _check_adapters(s: ServerSettings) -> None:
    """The ``--lora`` and ``--lora-sha256`` flags parse, and local files exist."""
    if not (s.lora or s.lora_sha256):
        return
    from flux_server.execution.lora import parse_lora_flags
    from flux_server.execution.lora_source import check_local, parse_sha256_flags

    specs = parse_lora_flags(s.lora)
    parse_sha256_flags(s.lora_sha256, specs)
    check_local(specs)


def _audit_log(s: ServerSettings, metrics: Metrics) -> AuditSink | None:
    if s.audit_log is None:
        return None
    from flux_server.admission.audit import AuditLog

    audit_log = AuditLog(s.audit_log, hash_prompts=s.audit_hash_prompts, release=s.release)
    audit_log.on_failure = lambda exc: _audit_failed(metrics, exc)
    metrics.audit_free_bytes.set_function(audit_log.free_bytes)
    return audit_log


def _audit_failed(metrics: Metrics, exc: OSError) -> None:
    metrics.audit_write_failures.inc()
    log.error("audit line not written", extra={"error": str(exc)})

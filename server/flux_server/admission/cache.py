"""The result cache: seeded requests answered again from memory or Redis.

A generation is deterministic given its resolved parameters, its seed and the weights,
so a request that names its seed can be answered from a cache. The key is the SHA-256
of a canonical JSON form of the resolved request (after preset expansion) together
with the model id and revision, the release and the adapters; requests without an
explicit seed are never cached.

Two stores share the ``ResultCache`` protocol: ``MemoryCache``, an LRU bounded in
bytes (the default), and ``RedisCache`` (``--redis-url``), shared by all replicas,
with a TTL. Redis being unreachable is never an error: the request is served
uncached, the outage is logged once (and once more when Redis is back), and every
failure is reported to ``on_error`` for a metric.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from flux_server.admission.redis_link import connect, outage_errors

log = logging.getLogger(__name__)

KEY_VERSION = "fluxserve-cache-v1"
"""Bumped when the key's recipe changes, so old entries are never misread."""
REDIS_PREFIX = "fluxserve:result:"
# Fields that do not change the pixels: the preset is already expanded into the other
# fields, and scheduling hints only decide when the work runs.
IGNORED_FIELDS = frozenset(
    {"style_preset", "priority", "request_id", "timeout", "timeout_s", "deadline", "adapters"}
)
_ENTRY_OVERHEAD = 64  # rough per-entry bookkeeping, so many tiny entries still count


def _canonical(value: Any) -> Any:
    """A JSON-ready form where equal requests are equal: no None, sorted keys,
    NFC strings, integral floats as ints."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        return {
            str(k): _canonical(v)
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
            if v is not None
        }
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot cache a request with a non-finite number ({value})")
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    return value


def _adapter_items(adapters: Mapping[str, float] | Iterable[Any]) -> list[list[Any]]:
    items: list[tuple[str, float]] = []
    source = adapters.items() if isinstance(adapters, Mapping) else adapters
    for item in source:
        if isinstance(item, Mapping):
            items.append((str(item["name"]), float(item.get("scale", 1.0))))
        elif isinstance(item, BaseModel):
            items.append((str(item.name), float(item.scale)))  # type: ignore[attr-defined]
        else:
            name, scale = tuple(item)
            items.append((str(name), float(scale)))
    return [[name, _canonical(scale)] for name, scale in sorted(items)]


def cache_key(
    request: BaseModel | Mapping[str, Any],
    *,
    model: str,
    revision: str | None = None,
    release: str | None = None,
    adapters: Mapping[str, float] | Iterable[Any] | None = None,
    seeded: bool | None = None,
    adapter_versions: Mapping[str, str] | None = None,
) -> str | None:
    """The cache key of a resolved request, or None when it must not be cached.

    ``request`` is the request after preset expansion (the server's resolved job or its
    fields). ``adapters`` defaults to the request's own ``adapters`` field (a mapping
    name → scale, ``(name, scale)`` pairs or ``{name, scale}`` items). ``seeded`` says
    whether the caller chose the seed; by default, whether ``request`` has one. Pass it
    when the server filled in a random seed: such a request is not repeatable.
    ``adapter_versions`` maps adapter names to a digest of their weights
    (``lora.fingerprint``); those of the adapters in use join the key.
    """
    fields: dict[str, Any] = (
        request.model_dump() if isinstance(request, BaseModel) else dict(request)
    )
    if seeded is None:
        seeded = fields.get("seed") is not None
    if not seeded or fields.get("seed") is None:
        return None
    if adapters is None:
        adapters = fields.get("adapters") or ()
    body = {k: v for k, v in fields.items() if k not in IGNORED_FIELDS}
    if isinstance(body.get("output_format"), str):
        body["output_format"] = body["output_format"].lower()
    adapter_items = _adapter_items(adapters)
    versions = adapter_versions or {}
    document = {
        "v": KEY_VERSION,
        "model": model,
        "revision": revision,
        "release": release,
        "adapters": [[name, scale, versions.get(name)] for name, scale in adapter_items],
        "request": _canonical(body),
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@runtime_checkable
class ResultCache(Protocol):
    """What the server needs of a cache. ``get`` returns None on a miss, and neither
    method raises for a store that is down."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """An in-process LRU bounded in bytes, with an optional TTL.

    Single event loop, no awaits inside: no lock is needed. A value larger than the
    whole budget is not stored.
    """

    def __init__(self, max_bytes: int, ttl: float | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"cache size must be positive, got {max_bytes} bytes")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + _ENTRY_OVERHEAD

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.size_bytes -= self._cost(key, value)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        cost = self._cost(key, value)
        if key in self._entries:
            self._drop(key)
        if cost > self.max_bytes:
            return
        while self.size_bytes + cost > self.max_bytes:
            self._drop(next(iter(self._entries)))
        expires = time.monotonic() + self.ttl if self.ttl else math.inf
        self._entries[key] = (value, expires)
        self.size_bytes += cost

    async def close(self) -> None:
        self._entries.clear()
        self.size_bytes = 0


class RedisCache:
    """Results in Redis (``redis.asyncio``) with a TTL, shared by every replica.

    After a failure Redis is left alone for ``retry_interval`` seconds (requests are
    misses meanwhile, without waiting on a dead socket), then tried again.
    """

    def __init__(
        self,
        url: str,
        ttl: float,
        *,
        timeout: float = 1.0,
        retry_interval: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"cache ttl must be positive, got {ttl}")
        self.url = url
        self.ttl_ms = max(1, round(ttl * 1000))
        self.retry_interval = retry_interval
        self.prefix = prefix
        self.on_error = on_error
        self.errors = 0
        self._down = False
        self._skip_until = 0.0
        self._errors = outage_errors()
        # No client-side retries: a miss now beats a request held up by backoff.
        self._client = connect(url, timeout=timeout, retries=0)

    @property
    def available(self) -> bool:
        """False while Redis is considered down."""
        return not self._down

    def _skipping(self) -> bool:
        return self._down and time.monotonic() < self._skip_until

    def _failed(self, exc: BaseException, op: str) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + self.retry_interval
        if not self._down:
            self._down = True
            log.warning(
                "redis cache unreachable, serving uncached: %s",
                exc,
                extra={"redis_op": op, "error": type(exc).__name__},
            )
        if self.on_error is not None:
            self.on_error(exc)

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            log.warning("redis cache reachable again", extra={"errors": self.errors})

    async def get(self, key: str) -> bytes | None:
        if self._skipping():
            return None
        try:
            value = await self._client.get(self.prefix + key)
        except self._errors as exc:
            self._failed(exc, "get")
            return None
        self._succeeded()
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes) -> None:
        if self._skipping():
            return
        try:
            await self._client.set(self.prefix + key, value, px=self.ttl_ms)
        except self._errors as exc:
            self._failed(exc, "set")
            return
        self._succeeded()

    async def close(self) -> None:
        await self._client.aclose()


def build_cache(
    *,
    redis_url: str | None,
    cache_bytes: int,
    ttl: float,
    on_error: Callable[[BaseException], None] | None = None,
) -> ResultCache | None:
    """The cache the settings ask for: Redis when a URL is given, else memory when
    ``cache_bytes`` > 0, else None (caching off)."""
    if redis_url:
        return RedisCache(redis_url, ttl, on_error=on_error)
    if cache_bytes > 0:
        return MemoryCache(cache_bytes, ttl=ttl)
    return None

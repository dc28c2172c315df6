"""Feedback on served requests: which experiment arm a request id was served in, and the
outcomes (events) callers report for it.

Every request served in an arm leaves a record (request id → experiment, arm, subject,
time), kept in memory with a bound on count and age, and in Redis when ``--redis-url`` is
set, so feedback that reaches another replica still finds its arm. An event counts once
per request (a second ``like`` of the same image is answered, and said not to count), so
the report can treat counts as successes among requests. Event names are free-form but
bounded in length (the name rule of presets) and in number per experiment: they become
metric labels.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from flux_contract.names import name_problem
from flux_server.errors import InvalidRequest, NotFound, Unavailable

log = logging.getLogger(__name__)

MAX_EVENTS_PER_EXPERIMENT = 20
REDIS_PREFIX = "fluxserve:feedback:"
MAX_REQUEST_ID = 128

# One round trip, atomic: admit the event name into the experiment's bounded set, then
# claim (request, event) once. Returns -1 when the set is full, 1 when counted, 0 when
# this request already had the event.
_CLAIM_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""


class RequestNotFound(NotFound):
    """Feedback for a request id this deployment does not know (never served in an
    experiment, or expired): HTTP 404, gRPC NOT_FOUND."""


@dataclass(frozen=True)
class ServedRecord:
    request_id: str
    experiment: str
    arm: str
    subject: str
    time: float
    """Unix time the request was served."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ServedRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class FeedbackOutcome:
    record: ServedRecord
    counted: bool
    """False when this request already had this event (it counts once)."""


def check_feedback(request_id: str, event: str, value: float) -> None:
    """InvalidRequest naming the field, for a feedback body that cannot be recorded."""
    if not request_id or len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidRequest(
            f"request_id must be 1 to {MAX_REQUEST_ID} printable characters",
            field="request_id",
        )
    problem = name_problem(event)
    if problem is not None:
        raise InvalidRequest(f"event {event!r}: {problem}", field="event")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InvalidRequest(
            f"value must be between 0 and 1 (1: the event happened), got {value}",
            field="value",
        )


def _too_many_events(experiment: str) -> InvalidRequest:
    return InvalidRequest(
        f"experiment {experiment!r} already has {MAX_EVENTS_PER_EXPERIMENT} event names; "
        "use one of them",
        field="event",
    )


def _not_found(request_id: str) -> RequestNotFound:
    return RequestNotFound(
        f"request {request_id!r} is unknown or expired: feedback is taken for requests "
        "served in an experiment",
        field="request_id",
    )


class MemoryRecords:
    """Records of this replica: the newest ``max_records``, none older than ``ttl``."""

    def __init__(self, max_records: int, ttl: float) -> None:
        if max_records < 1 or ttl <= 0:
            raise ValueError("feedback store: max_records and ttl must be positive")
        self.max_records = max_records
        self.ttl = ttl
        self._records: OrderedDict[str, tuple[ServedRecord, set[str]]] = OrderedDict()
        self._events: dict[str, set[str]] = {}

    def put(self, record: ServedRecord) -> None:
        self._records[record.request_id] = (record, set())
        self._records.move_to_end(record.request_id)
        while len(self._records) > self.max_records:
            self._records.popitem(last=False)

    def get(self, request_id: str, now: float) -> ServedRecord | None:
        entry = self._records.get(request_id)
        if entry is None:
            return None
        if now - entry[0].time > self.ttl:
            del self._records[request_id]
            return None
        return entry[0]

    def claim(self, record: ServedRecord, event: str) -> bool:
        names = self._events.setdefault(record.experiment, set())
        if event not in names:
            if len(names) >= MAX_EVENTS_PER_EXPERIMENT:
                raise _too_many_events(record.experiment)
            names.add(event)
        entry = self._records.get(record.request_id)
        if entry is None:  # found in Redis, not here: remember it to dedupe locally too
            self.put(record)
            entry = self._records[record.request_id]
        if event in entry[1]:
            return False
        entry[1].add(event)
        return True


class FeedbackStore:
    """Served-request records in memory, and in Redis when a URL is given (shared by the
    replicas). Records are written to both; a lookup tries this replica first."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        max_records: int = 100_000,
        ttl: float = 7 * 24 * 3600,
        timeout: float = 1.0,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        self.memory = MemoryRecords(max_records, ttl)
        self.ttl_ms = max(1, round(ttl * 1000))
        self.prefix = prefix
        self.redis_errors = 0
        self._redis: Any = None
        if redis_url:
            from redis.asyncio import Redis

            try:
                self._redis = Redis.from_url(
                    redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
                )
            except ValueError as exc:  # never repeats the URL (it may hold a password)
                raise ValueError(f"--redis-url: {exc}") from None
            self._claim = self._redis.register_script(_CLAIM_SCRIPT)

    def _errors(self) -> tuple[type[BaseException], ...]:
        from redis.exceptions import RedisError

        return (RedisError, OSError, asyncio.TimeoutError)

    async def remember(self, record: ServedRecord) -> None:
        """Keep the record of a request served in an arm. A Redis outage is logged, not
        raised: the request was served, and this replica still knows the record."""
        self.memory.put(record)
        if self._redis is None:
            return
        try:
            await self._redis.set(
                f"{self.prefix}req:{record.request_id}", record.to_json(), px=self.ttl_ms
            )
        except self._errors() as exc:
            self.redis_errors += 1
            log.warning(
                "feedback record not shared (redis unreachable): %s",
                exc,
                extra={"request_id": record.request_id, "error": type(exc).__name__},
            )

    async def lookup(self, request_id: str) -> ServedRecord:
        """The record of ``request_id``; RequestNotFound when unknown or expired,
        Unavailable when only Redis could know and it cannot be reached."""
        now = time.time()
        found = self.memory.get(request_id, now)
        if found is not None:
            return found
        if self._redis is None:
            raise _not_found(request_id)
        try:
            raw = await self._redis.get(f"{self.prefix}req:{request_id}")
        except self._errors() as exc:
            self.redis_errors += 1
            raise Unavailable("feedback store unreachable; retry later") from exc
        if raw is None:
            raise _not_found(request_id)
        return ServedRecord.from_json(raw)

    async def record(self, request_id: str, event: str, value: float = 1.0) -> FeedbackOutcome:
        """Check a feedback body, find the arm its request was served in, and claim the
        event for it (once per request and event). The caller counts the metric when
        ``counted``."""
        check_feedback(request_id, event, value)
        record = await self.lookup(request_id)
        if self._redis is None:
            return FeedbackOutcome(record, self.memory.claim(record, event))
        try:
            result = await self._claim(
                keys=[
                    f"{self.prefix}events:{record.experiment}",
                    f"{self.prefix}claimed:{request_id}:{event}",
                ],
                args=[event, MAX_EVENTS_PER_EXPERIMENT, self.ttl_ms],
            )
        except self._errors() as exc:
            self.redis_errors += 1
            raise Unavailable("feedback store unreachable; retry later") from exc
        if int(result) < 0:
            raise _too_many_events(record.experiment)
        return FeedbackOutcome(record, int(result) == 1)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

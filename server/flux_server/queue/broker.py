"""The fleet queue's Redis side: every command fronts and workers send, and nothing else.

Entries are acknowledged (and deleted) only once their result is stored, so a stream
holds exactly the entries waiting or running. A worker holds ``claim(request_id)``
(SET NX, renewed while it runs) before it generates: an entry redelivered by
``XAUTOCLAIM`` while its first worker still runs, or whose result is stored already,
is never generated a second time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from flux_server.queue import names
from flux_server.queue.decisions import Candidate, batch_key, fair_order

# The client decodes replies (decode_responses=True), which redis-py's types cannot
# express: these name what the commands used here return, for the casts below.
Entry = tuple[str, dict[str, str]]

# One key's next undelivered entry, for this consumer, in one round trip: read it and
# mark the key served (its turn moves back); none, drop the key from its class's rotation
# if its stream is empty, atomically (a front's XADD + ZADD, one MULTI, can never land
# between the check and the removal). KEYS: class keys, stream; ARGV: group, consumer,
# now, key id.
_READ_ONE = """
local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                       'STREAMS', KEYS[2], '>')
if not got then
  if redis.call('XLEN', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[4]) end
  return false
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[4])
return got[1][2][1]
"""

# A claim in one round trip (see Broker.claim). KEYS: result, cancelled, claim; ARGV:
# consumer, ttl ms.
_CLAIM = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[3]) == ARGV[1] then return 1 end
return 0
"""


def connect(url: str, password: str | None = None) -> aioredis.Redis:
    """A client for ``redis://`` or ``rediss://``; ``password`` (from a Secret) unless
    the URL carries one."""
    kwargs: dict[str, Any] = {"decode_responses": True, "health_check_interval": 10}
    if password:
        kwargs["password"] = password
    return aioredis.from_url(url, **kwargs)


class Broker:
    """The queue's commands on one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._groups: set[str] = set()
        self._read_one = client.register_script(_READ_ONE)
        self._claim = client.register_script(_CLAIM)

    async def _group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            # From id 0: entries added before the group existed are still read.
            await self.redis.xgroup_create(stream, names.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    # -- fronts ------------------------------------------------------------------------

    async def enqueue(
        self, track: str, priority: str, key_id: str, payload: Mapping[str, Any]
    ) -> str:
        stream = names.stream(track, priority, key_id)
        await self._group(stream)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"p": json.dumps(payload)})
            pipe.zadd(names.class_keys(track, priority), {key_id: 0}, nx=True)
            pipe.sadd(names.tracks_set(), track)
            pipe.publish(names.wake(track), priority)
            entry_id, *_ = await pipe.execute()
        return str(entry_id)

    async def cancel(self, request_id: str, ttl: float) -> None:
        """Withdraw a request: waiting, workers skip it; running, its worker stops it at
        the next step boundary."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(names.cancelled(request_id), "1", px=int(ttl * 1000))
            pipe.publish(names.cancels(), request_id)
            await pipe.execute()

    async def withdraw(self, stream: str, entry_id: str) -> None:
        """Delete an entry nobody has taken (its request was answered already)."""
        await self.redis.xdel(stream, entry_id)

    async def result(self, request_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(names.result(request_id))
        return json.loads(raw) if raw else None

    # -- workers -----------------------------------------------------------------------

    async def read_one(
        self, track: str, priority: str, key_id: str, consumer: str
    ) -> Candidate | None:
        """The next undelivered entry of one key's stream, now this consumer's."""
        stream = names.stream(track, priority, key_id)
        await self._group(stream)
        got = await self._read_one(
            keys=[names.class_keys(track, priority), stream],
            args=[names.GROUP, consumer, time.time(), key_id],
        )
        if not got:
            return None
        entry_id, flat = got
        return _candidate(stream, str(entry_id), dict(zip(flat[::2], flat[1::2], strict=True)))

    async def turn_order(self, track: str, priority: str) -> list[str]:
        scored = cast(
            list[tuple[str, float]],
            await self.redis.zrange(names.class_keys(track, priority), 0, -1, withscores=True),
        )
        return fair_order(dict(scored))

    async def autoclaim(
        self, track: str, consumer: str, min_idle_s: float, count: int
    ) -> list[Candidate]:
        """Entries a silent worker left for longer than the visibility timeout."""
        found: list[Candidate] = []
        for priority in names.PRIORITIES:
            for key_id in await self.turn_order(track, priority):
                stream = names.stream(track, priority, key_id)
                await self._group(stream)
                reply = await self.redis.xautoclaim(
                    stream, names.GROUP, consumer, int(min_idle_s * 1000), "0-0", count=count
                )
                for entry_id, fields in reply[1]:
                    if fields:  # a deleted entry claims as None
                        found.append(_candidate(stream, entry_id, fields))
                if len(found) >= count:
                    return found
        return found

    async def claim(self, request_id: str, consumer: str, ttl: float) -> bool:
        """True when this consumer may generate the request: nobody else holds it and no
        result is stored."""
        keys = [names.result(request_id), names.cancelled(request_id), names.claim(request_id)]
        return bool(await self._claim(keys=keys, args=[consumer, int(ttl * 1000)]))

    async def renew(self, consumer: str, held: list[Candidate], ttl: float) -> None:
        """Keep what this worker runs its own: the claims' TTL and the entries' idle time."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in held:
                pipe.pexpire(names.claim(str(c.payload["request_id"])), int(ttl * 1000))
                pipe.xclaim(c.stream, names.GROUP, consumer, 0, [c.entry_id], justid=True)
            await pipe.execute()

    async def publish(self, request_id: str, event: Mapping[str, Any]) -> None:
        await self.redis.publish(names.events(request_id), json.dumps(event))

    async def finish(self, c: Candidate, outcome: Mapping[str, Any] | None, ttl: float) -> None:
        """Store the outcome (the first stored wins), tell the front, then acknowledge:
        one transaction, so one round trip, and the entry is never acknowledged without
        its result. ``outcome`` None: acknowledge only (already answered, or cancelled)."""
        request_id = str(c.payload["request_id"])
        async with self.redis.pipeline(transaction=True) as pipe:
            if outcome is not None:
                pipe.set(names.result(request_id), json.dumps(outcome), nx=True, px=int(ttl * 1000))
            pipe.publish(names.events(request_id), json.dumps({"type": "done"}))
            pipe.xack(c.stream, names.GROUP, c.entry_id)
            pipe.xdel(c.stream, c.entry_id)
            pipe.delete(names.claim(request_id))
            await pipe.execute()

    async def heartbeat(self, track: str, name: str, info: Mapping[str, Any], ttl: float) -> None:
        await self.redis.set(names.worker(track, name), json.dumps(info), px=int(ttl * 1000))

    async def record_startup(self, track: str, seconds: float, ttl: float) -> None:
        await self.redis.set(names.startup(track), f"{seconds:.3f}", px=int(ttl * 1000))

    async def startup_seconds(self, track: str) -> float | None:
        raw = await self.redis.get(names.startup(track))
        return float(raw) if raw else None

    async def workers(self) -> list[dict[str, Any]]:
        found = []
        async for key in self.redis.scan_iter(match=names.workers_pattern(), count=500):
            raw = await self.redis.get(key)
            if raw:
                found.append(json.loads(raw))
        return found

    # -- what clients and operators see ---------------------------------------------------

    async def class_state(self, track: str, priority: str) -> dict[str, tuple[int, str]]:
        """Per key of a class: (entries waiting, last delivered id)."""
        state: dict[str, tuple[int, str]] = {}
        key_ids = cast(list[str], await self.redis.zrange(names.class_keys(track, priority), 0, -1))
        for key_id in key_ids:
            stream = names.stream(track, priority, key_id)
            try:
                groups = await self.redis.xinfo_groups(stream)
                length = await self.redis.xlen(stream)
            except ResponseError:
                continue  # the stream was just dropped
            group = next((g for g in groups if g["name"] == names.GROUP), None)
            if group is None:
                continue
            state[key_id] = (length - int(group["pending"]), str(group["last-delivered-id"]))
        return state

    async def oldest_waiting(self, stream: str, last_delivered: str) -> float | None:
        """Enqueue time (epoch s) of the stream's first undelivered entry."""
        got = cast(
            list[Entry], await self.redis.xrange(stream, min=f"({last_delivered}", max="+", count=1)
        )
        return int(got[0][0].split("-")[0]) / 1000 if got else None

    async def ahead_of(self, stream: str, last_delivered: str, entry_id: str) -> int | None:
        """Undelivered entries before ``entry_id`` in its stream; None once delivered."""
        if _id_tuple(entry_id) <= _id_tuple(last_delivered):
            return None
        got = cast(
            list[Entry],
            await self.redis.xrange(
                stream, min=f"({last_delivered}", max=f"({entry_id}", count=100_000
            ),
        )
        return len(got)

    async def tracks(self) -> list[str]:
        return sorted(cast(set[str], await self.redis.smembers(names.tracks_set())))


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _candidate(stream: str, entry_id: str, fields: Mapping[str, str]) -> Candidate:
    payload = json.loads(fields["p"])
    units = int(payload["job"].get("num_images", 1))
    return Candidate(stream, entry_id, batch_key(payload), units, payload)

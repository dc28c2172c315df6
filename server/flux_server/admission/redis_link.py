"""How the server reaches Redis at ``--redis-url`` (the result cache here, the async
jobs' store in :mod:`flux_server.jobs.store_redis`): which errors mean "Redis is not
there right now", and a client that gives up after its timeout and never repeats the
URL, which may hold a password. redis is imported when a client is made: a server
without ``--redis-url`` never loads it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis


def outage_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "Redis is not there right now". Anything else is a bug and
    surfaces."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


def connect(url: str, *, timeout: float, retries: int, read_timeout: bool = True) -> Redis:
    """A ``redis.asyncio.Redis`` client of ``url``: connecting (and, with
    ``read_timeout``, each reply) waits ``timeout`` seconds, and a failed command is
    retried ``retries`` times at once. A malformed URL is a ``ValueError`` naming
    ``--redis-url``, not the URL."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), retries),
    }
    if read_timeout:
        options["socket_timeout"] = timeout
    try:
        return Redis.from_url(url, **options)
    except ValueError as exc:  # the message never repeats the URL (it may hold a password)
        raise ValueError(f"--redis-url: {exc}") from None

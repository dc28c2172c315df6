"""The Redis key names of the fleet queue, in one place so fronts and workers agree.

A class is a (release track, priority) pair. Within a class every API key has its own
stream, so a worker can serve the keys in turn (see :func:`decisions.fair_order`); the
class's sorted set lists the keys with entries, scored by when each was last served.
"""

from __future__ import annotations

PREFIX = "fluxserve:queue"
GROUP = "workers"
PRIORITIES = ("high", "normal")  # the order workers read them in


def priority_name(priority: bool) -> str:
    return "high" if priority else "normal"


def class_keys(track: str, priority: str) -> str:
    """Sorted set: the API keys with entries in this class, scored by last served."""
    return f"{PREFIX}:{track}:{priority}:keys"


def stream(track: str, priority: str, key_id: str) -> str:
    """One API key's entries in one class."""
    return f"{PREFIX}:{track}:{priority}:{key_id}"


def wake(track: str) -> str:
    """Pub/sub channel: new work on this track, the message its priority (idle workers
    wait on it; a busy one offers priority work to its running call)."""
    return f"{PREFIX}:{track}:wake"


def result(request_id: str) -> str:
    return f"{PREFIX}:result:{request_id}"


def events(request_id: str) -> str:
    """Pub/sub channel of one request: started, progress, done."""
    return f"{PREFIX}:events:{request_id}"


def claim(request_id: str) -> str:
    """Held (SET NX, with a TTL the holder renews) by the worker generating a request."""
    return f"{PREFIX}:claim:{request_id}"


def cancels() -> str:
    """Pub/sub channel: the request id of each withdrawn request (its worker stops it)."""
    return f"{PREFIX}:cancels"


def cancelled(request_id: str) -> str:
    return f"{PREFIX}:cancelled:{request_id}"


def worker(track: str, name: str) -> str:
    """A worker's heartbeat (expires when it stops beating), with its measured rate."""
    return f"{PREFIX}:workers:{track}:{name}"


def workers_pattern() -> str:
    return f"{PREFIX}:workers:*"


def tracks_set() -> str:
    """Every track that ever had an entry: what GET /queue and the depth gauge read."""
    return f"{PREFIX}:tracks"


def startup(track: str) -> str:
    """The seconds a worker of this track last took from start to ready (its start
    phases): what a front advises a caller to wait while no worker runs."""
    return f"{PREFIX}:{track}:startup"

"""Whether this operator leads its peers, read from kopf's peering object.

kopf pauses its own watching while another live peer has the same or a higher priority,
but the periodic resync is the operator's own task: it asks here before each round, so
that a standby replica never acts. The rule is kopf's (``process_peering_event``): a peer
is alive until ``lastseen + lifetime``; this operator acts when no other live peer has a
priority equal to or above its own.
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

DEFAULT_LIFETIME_SECONDS = 60
"""kopf's default peer lifetime, for entries that do not say."""


def own_identity(environ: Mapping[str, str] = os.environ) -> str:
    """This operator's name among its peers: the pod name (POD_ID) in a cluster, as kopf
    itself would take it, else one unique to this process."""
    pod = environ.get("POD_ID")
    if pod:
        return pod
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def leads(
    peering_status: Mapping[str, Any] | None,
    identity: str,
    priority: int,
    now: datetime.datetime,
) -> bool:
    """True when no other live peer in the peering object's ``status`` has a priority
    equal to or above ``priority``."""
    for peer, info in (peering_status or {}).items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        seen = _parse_time(info.get("lastseen")) or now
        lifetime = datetime.timedelta(seconds=int(info.get("lifetime", DEFAULT_LIFETIME_SECONDS)))
        if seen + lifetime <= now:
            continue  # dead: kopf ignores it too
        if int(info.get("priority", 0)) >= priority:
            return False
    return True

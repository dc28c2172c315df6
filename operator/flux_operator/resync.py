"""The periodic pass: every so often, reconcile every FluxDeployment, events or not
(repairs children deleted or edited behind the operator's back) — on the leader only.

Why a loop of our own and not ``@kopf.timer``: kopf does stop timers on a standby peer
(``daemon_killer`` in ``kopf/_core/engines/daemons.py`` stops every daemon and timer
while the operator is paused by peering, and the paused watch spawns no new ones), but
kopf declares every timer and daemon with ``requires_finalizer=True`` (``kopf/on.py``),
with no option to turn it off. A timer would put kopf's finalizer on every
FluxDeployment: deleting one would then wait for a running operator (after
``helm uninstall``, or while the operator is down, ``kubectl delete fxd`` would hang),
and the operator would need ``patch`` on FluxDeployments, which it otherwise never
writes. The children are removed by owner references and the garbage collector; no
finalizer is needed, so this loop asks kopf's peering object (``peering.leads``, kopf's
own rule) before each round instead.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from flux_operator.kube import KubeApi
from flux_operator.peering import leads
from flux_operator.reconciler import TRANSIENT_FAILURES
from flux_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


async def resync_forever(
    namespaces: list[str | None],
    list_all: Callable[[str | None], Awaitable[list[dict[str, Any]]]],
    reconcile: Callable[[str, str], Awaitable[None]],
    period: float,
) -> None:
    """Every ``period`` seconds, reconcile every FluxDeployment ``list_all`` returns.
    Nothing that fails in one round stops the next: an API server restart must not end
    the repairs for good."""
    while True:
        await asyncio.sleep(period)
        for namespace in namespaces:
            try:
                items = await list_all(namespace)
            except TRANSIENT_FAILURES as exc:
                logger.warning("resync listing failed", extra={"error": str(exc)})
                continue
            for item in items:
                meta = item.get("metadata", {})
                try:
                    await reconcile(meta.get("namespace") or "default", meta["name"])
                except Exception:
                    logger.exception("resync failed", extra={"object": meta.get("name")})


async def leading(api: KubeApi, settings: OperatorSettings, namespace: str | None) -> bool:
    """Whether this operator acts for ``namespace`` (None: cluster-wide) now: always when
    standalone; with peering, when it leads kopf's peering object there (kopf waits while
    the object is missing, and so does this)."""
    if settings.peering is None:
        return True
    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    peering = await api.get(kind, namespace, settings.peering)
    if peering is None:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    return leads(peering.get("status"), settings.identity or "", settings.priority or 0, now)


def start_resync(
    api: KubeApi, settings: OperatorSettings, reconcile: Callable[[str, str], Awaitable[None]]
) -> asyncio.Task[None] | None:
    """The periodic pass as a task (None when ``resync_seconds`` is 0)."""
    if settings.resync_seconds <= 0:
        return None
    namespaces: list[str | None] = list(settings.namespaces) or [None]

    async def list_all(namespace: str | None) -> list[dict[str, Any]]:
        if not await leading(api, settings, namespace):
            return []  # a standby replica: the leader resyncs
        return await api.list("FluxDeployment", namespace, {})

    return asyncio.create_task(
        resync_forever(namespaces, list_all, reconcile, settings.resync_seconds)
    )

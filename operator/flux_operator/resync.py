"""The periodic pass: every so often, reconcile every FluxDeployment, events or not
(repairs children deleted or edited behind the operator's back) — on the leader only. Each
round lists every kind once and corrects the watch cache with it (``relist``).

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

from flux_operator.cache import CHILD_KINDS, MANAGED, WatchCache
from flux_operator.kube import ApiError, KubeApi
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


async def relist(api: KubeApi, cache: WatchCache, namespace: str | None) -> list[dict[str, Any]]:
    """The FluxDeployments in ``namespace`` (None: all), listed, with one listing of each
    kind of child correcting the watch cache (what a resumed watch does not say: the
    objects deleted while it was paused). A handful of requests per round, however many
    resources there are."""
    resources = await api.list("FluxDeployment", namespace, {})
    cache.refresh("FluxDeployment", namespace, resources)
    for kind in CHILD_KINDS:
        try:
            cache.refresh(kind, namespace, await api.list(kind, namespace, {}))
        except ApiError as exc:
            if exc.status != 404:
                raise
            # The kind is not served (no Gateway API installed): nothing of it to correct.
    cache.refresh("ConfigMap", namespace, await api.list("ConfigMap", namespace, MANAGED))
    return resources


def start_resync(
    api: KubeApi,
    cache: WatchCache,
    settings: OperatorSettings,
    reconcile: Callable[[str, str], Awaitable[None]],
) -> asyncio.Task[None] | None:
    """The periodic pass as a task (None when ``resync_seconds`` is 0)."""
    if settings.resync_seconds <= 0:
        return None
    namespaces: list[str | None] = list(settings.namespaces) or [None]

    async def list_all(namespace: str | None) -> list[dict[str, Any]]:
        if not await leading(api, settings, namespace):
            return []  # a standby replica: the leader resyncs
        await cache.ready.wait()  # kopf has indexed every kind: correct it, do not fill it
        return await relist(api, cache, namespace)

    return asyncio.create_task(
        resync_forever(namespaces, list_all, reconcile, settings.resync_seconds)
    )


async def follow_progress(
    running: Callable[[], list[tuple[str, str]]],
    leading_in: Callable[[str], Awaitable[bool]],
    reconcile: Callable[[str, str], Awaitable[None]],
    period: float,
) -> None:
    """Every ``period`` seconds, reconcile each running FluxLoRATraining reading its
    trainer's log: a log line raises no event, so without this pass ``status.progress``
    would move only when the Job ends. Costs three reads a running training a round."""
    while True:
        await asyncio.sleep(period)
        for namespace, name in running():
            try:
                if await leading_in(namespace):
                    await reconcile(namespace, name)
            except Exception:
                logger.exception("progress round failed", extra={"object": f"{namespace}/{name}"})


def start_progress(
    api: KubeApi,
    settings: OperatorSettings,
    running: Callable[[], list[tuple[str, str]]],
    reconcile: Callable[[str, str], Awaitable[None]],
) -> asyncio.Task[None] | None:
    """The progress pass as a task (None when ``progress_seconds`` is 0); on the leader
    only, as the resync."""
    if settings.progress_seconds <= 0:
        return None

    async def leading_in(namespace: str) -> bool:
        return await leading(api, settings, namespace if settings.namespaces else None)

    return asyncio.create_task(
        follow_progress(running, leading_in, reconcile, settings.progress_seconds)
    )

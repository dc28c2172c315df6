"""The periodic resync outlives failures (a listing the API server refuses or drops, a
reconciliation that raises, cost one round, never the resync itself), and what it
reconciles posts its events like any other reconciliation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kubernetes_validate
from conftest import Cluster, base_spec

from flux_operator.cache import WatchCache
from flux_operator.kube import ApiError, KubeApi, load_configuration
from flux_operator.reconcile import Event
from flux_operator.reconciler import Reconciler
from flux_operator.resync import resync_forever
from flux_operator.settings import RetrySettings


async def test_a_failed_round_does_not_end_the_resync() -> None:
    failures: list[Exception] = [
        ConnectionResetError("connection reset by peer"),  # the API server restarting
        ApiError(503, "ServiceUnavailable", "etcd is down", "GET", "/apis/..."),
    ]
    reconciled: list[tuple[str, str]] = []

    async def list_all(namespace: str | None) -> list[dict[str, Any]]:
        if failures:
            raise failures.pop(0)
        return [
            {"metadata": {"namespace": "studio", "name": "broken"}},
            {"metadata": {"namespace": "studio", "name": "flux-dev"}},
        ]

    async def reconcile(namespace: str, name: str) -> None:
        if name == "broken":
            raise RuntimeError("a bug in one resource's reconciliation")
        reconciled.append((namespace, name))

    task = asyncio.create_task(resync_forever([None], list_all, reconcile, period=0.001))
    deadline = asyncio.get_running_loop().time() + 10
    try:
        while len(reconciled) < 2:
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "the resync stopped"
            await asyncio.sleep(0.001)
    finally:
        task.cancel()
    assert not failures and reconciled[:2] == [("studio", "flux-dev")] * 2


async def test_events_are_posted_outside_kopf_handlers(cluster: Cluster, kubeconfig: Path) -> None:
    """What the resync reconciles is announced too: the Reconciler posts its events itself
    (kopf.event() works only inside a kopf handler; the resync runs outside one)."""
    api = KubeApi(load_configuration(kubeconfig), RetrySettings(attempts=2), threads=2)
    body = await cluster.create_fd("flux-dev", base_spec())
    try:
        await Reconciler(api, WatchCache({}))._post(
            body, [Event("Warning", "RolloutFailed", "x" * 2000)]
        )
    finally:
        api.close()
    (event,) = cluster.events("RolloutFailed")
    kubernetes_validate.validate(event, "1.33.0", strict=True)
    assert event["involvedObject"]["uid"] == body["metadata"]["uid"]
    assert event["metadata"]["name"].startswith("flux-dev.")
    assert len(event["message"]) == 1024 and event["type"] == "Warning"

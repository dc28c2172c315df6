"""The periodic resync outlives failures: a listing the API server refuses or drops, and
a reconciliation that raises, cost one round, never the resync itself."""

from __future__ import annotations

import asyncio
from typing import Any

from flux_operator.handlers import resync_forever
from flux_operator.kube import ApiError


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

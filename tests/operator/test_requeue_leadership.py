"""A requeue timer (a canary's next analysis) set while this replica led must not act
once another replica leads: kopf pauses a standby's handlers, not this process's timers."""

from __future__ import annotations

import asyncio
from typing import Any

from flux_operator.reconciler import Reconciler


class _Recording(Reconciler):
    def __init__(self, leads: bool) -> None:
        self.asked: list[str] = []
        self.fired = asyncio.Event()

        async def leading(namespace: str) -> bool:
            self.asked.append(namespace)
            self.fired.set()
            return leads

        super().__init__(api=None, cache=None, leading=leading)  # type: ignore[arg-type]
        self.reconciled: list[tuple[str, str]] = []

    async def reconcile(self, namespace: str, name: str, **_: Any) -> None:
        self.reconciled.append((namespace, name))


async def _fired(reconciler: _Recording) -> None:
    """Until the timer has fired and the reconciliation it started has ended."""
    await reconciler.fired.wait()
    await asyncio.gather(*reconciler._tasks)


async def test_a_requeue_on_a_replica_that_lost_leadership_does_nothing() -> None:
    standby = _Recording(leads=False)
    standby._requeue("team-a", "flux-dev", 0)
    await asyncio.wait_for(_fired(standby), 5)
    assert standby.asked == ["team-a"]
    assert standby.reconciled == []


async def test_a_requeue_on_the_leader_reconciles() -> None:
    leader = _Recording(leads=True)
    leader._requeue("team-a", "flux-dev", 0)
    await asyncio.wait_for(_fired(leader), 5)
    assert leader.reconciled == [("team-a", "flux-dev")]

"""How ``make test`` spreads the suite over pytest-xdist workers (``-n N --dist loadfile``).

Like xdist's ``loadfile``, each module's tests run on one worker, one after the other, so
a module-scoped server starts once and no two tests of one module overlap. Two changes:

- modules that share a session-scoped process are one unit (``SHARED_WORKER``), so the
  process starts once;
- the slowest modules are handed out first (``SLOWEST_FIRST``), so the run does not end
  with one worker busy on a long module while the other waits. This is only an order,
  taken from ``--durations``; a stale list costs time, never a result.

(``--dist loadgroup`` with ``xdist_group`` marks would say the first, but with pytest
9.2 and pytest-xdist 3.8 it groups nothing: xdist writes the group into a node id field
pytest no longer reads, pytest-dev/pytest-xdist#1386.)
"""

from __future__ import annotations

from xdist.scheduler import LoadFileScheduling

SHARED_WORKER: dict[str, str] = {
    # The one real SDK server of tests/client/conftest.py (a session fixture).
    "tests/client/test_sdk_real_server.py": "sdk-real-server",
    "tests/client/test_error_contract.py": "sdk-real-server",
}

SLOWEST_FIRST: tuple[str, ...] = (
    "tests/server/test_speed_options.py",
    "tests/docs/test_readme.py",
    "tests/client/test_quality_gate.py",
    "tests/server/test_startup.py",
    "tests/server/test_gpu_bench.py",
    "tests/server/test_fuzz.py",
    "tests/server/test_lifecycle.py",
    "tests/server/test_audit_durability.py",
    "tests/vision/test_e2e.py",
    "tests/server/test_api.py",
    "tests/operator/test_operator_canary.py",
    "tests/fleet/test_fleet.py",
    "tests/fleet/test_step_fleet.py",
    "tests/features/test_replica_lost.py",
    "tests/server/test_idle_connections.py",
    "tests/server/test_disconnects.py",
    "tests/server/test_memory_before_auth.py",
    "tests/features/test_previews.py",
    "tests/features/test_queue_edits.py",
)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or the module's shared group."""
    module = nodeid.split("::", 1)[0]
    return SHARED_WORKER.get(module, module)


class ModuleScheduling(LoadFileScheduling):
    """``loadfile`` with shared units and the slowest modules first."""

    _ordered = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _assign_work_unit(self, node: object) -> None:
        if not self._ordered:
            # The queue holds every unit now (biggest first); move the slowest ahead.
            rank = {unit: i for i, unit in enumerate(SLOWEST_FIRST)}
            for unit in sorted(self.workqueue, key=lambda u: rank.get(u, len(rank))):
                self.workqueue.move_to_end(unit)
            self._ordered = True
        super()._assign_work_unit(node)  # type: ignore[arg-type]

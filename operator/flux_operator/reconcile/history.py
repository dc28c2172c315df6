"""The revision history: entries appended, replaced, pruned, and rollback targets."""

from __future__ import annotations

from typing import Any

from flux_operator.render import (
    Revision,
)
from flux_operator.spec import (
    HistoryEntry,
)


def revision_of(entry: HistoryEntry) -> Revision:
    return Revision(
        entry.release, entry.image, entry.presets_hash, entry.presets_config_map, entry.loras or ""
    )


def same_revision(entry: HistoryEntry, revision: Revision) -> bool:
    return revision_of(entry) == revision


def find_rollback_target(history: list[HistoryEntry], release: str) -> HistoryEntry | None:
    healthy = [e for e in history if e.release == release and e.available_time is not None]
    if healthy:
        return healthy[-1]
    named = [e for e in history if e.release == release]
    return named[-1] if named else None


def append_entry(history: list[HistoryEntry], revision: Revision, now: str) -> HistoryEntry:
    number = max((e.revision for e in history), default=0) + 1
    entry = HistoryEntry(
        revision=number,
        release=revision.release,
        image=revision.image,
        presets_hash=revision.presets_hash,
        presets_config_map=revision.presets_config_map,
        loras=revision.loras or None,
        time=now,
        outcome="Progressing",
    )
    history.append(entry)
    return entry


def replace_entry(history: list[HistoryEntry], entry: HistoryEntry, **changes: Any) -> HistoryEntry:
    updated = entry.model_copy(update=changes)
    history[history.index(entry)] = updated
    return updated


def prune_history(history: list[HistoryEntry], limit: int, keep: set[int]) -> list[HistoryEntry]:
    """Newest ``limit`` entries, plus the current and the last healthy one."""
    if len(history) <= limit:
        return history
    newest = {e.revision for e in history[-limit:]}
    return [e for e in history if e.revision in newest or e.revision in keep]

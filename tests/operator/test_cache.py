"""The watch cache: the indexes' values, the operator's own writes until a watch event
replaces them, and a listing's corrections (what a resumed watch does not report)."""

from __future__ import annotations

from typing import Any

from flux_operator.cache import CONFIG_MAPS_BY_OWNER, WatchCache, keep
from flux_operator.render import MANAGER, OWNER_LABEL

NS = "studio"


def _obj(kind: str, name: str, version: str = "1", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "resourceVersion": version, "labels": labels}
    return {"kind": kind, "metadata": meta, "spec": {"v": version}}


def _ours(kind: str, name: str, version: str = "1", owner: str = "flux") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": MANAGER, OWNER_LABEL: owner}
    return _obj(kind, name, version, **labels)


class Indexes:
    """kopf's indexes as the cache reads them: each event replaces the key's value."""

    def __init__(self) -> None:
        self.by_kind: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}

    def event(self, obj: dict[str, Any], index: str | None = None, key: str | None = None) -> None:
        kind = index or obj["kind"]
        name = key or obj["metadata"]["name"]
        self.by_kind.setdefault(kind, {})[(NS, name)] = [keep(obj["kind"], obj)]

    def deleted(self, kind: str, name: str) -> None:
        self.by_kind.get(kind, {}).pop((NS, name), None)


def test_a_write_is_seen_until_the_watch_delivers_something_newer() -> None:
    indexes = Indexes()
    cache = WatchCache(indexes.by_kind)
    assert cache.get("Service", NS, "flux") is None
    cache.wrote(_ours("Service", "flux"))
    assert cache.get("Service", NS, "flux")["spec"] == {"v": "1"}
    indexes.event(_ours("Service", "flux", "2"))  # the echo, or a later change
    assert cache.get("Service", NS, "flux")["spec"] == {"v": "2"}
    cache.removed("Service", NS, "flux")
    assert cache.get("Service", NS, "flux") is None  # deleted by us: gone at once
    indexes.deleted("Service", "flux")
    assert cache.get("Service", NS, "flux") is None


def test_others_objects_are_kept_as_who_owns_them() -> None:
    indexes = Indexes()
    indexes.event(_obj("Service", "flux", team="web"))
    cache = WatchCache(indexes.by_kind)
    kept = cache.get("Service", NS, "flux")
    assert kept is not None and "spec" not in kept
    assert kept["metadata"]["labels"] == {"team": "web"}


def test_config_maps_of_an_owner_include_those_just_created() -> None:
    indexes = Indexes()
    old = _ours("ConfigMap", "flux-presets-a")
    indexes.event(old)
    indexes.event(old, index=CONFIG_MAPS_BY_OWNER, key="flux")
    cache = WatchCache(indexes.by_kind)
    cache.wrote(_ours("ConfigMap", "flux-presets-b"))
    cache.wrote(_ours("ConfigMap", "other-presets-c", owner="other"))
    names = [cm["metadata"]["name"] for cm in cache.config_maps(NS, "flux")]
    assert names == ["flux-presets-a", "flux-presets-b"]
    cache.removed("ConfigMap", NS, "flux-presets-a")
    assert [cm["metadata"]["name"] for cm in cache.config_maps(NS, "flux")] == ["flux-presets-b"]


def test_a_listing_corrects_what_a_resumed_watch_did_not_report() -> None:
    indexes = Indexes()
    indexes.event(_ours("Service", "flux"))
    indexes.event(_ours("Service", "kept"))
    cache = WatchCache(indexes.by_kind)
    # Deleted while the watch was paused; another one created meanwhile.
    cache.refresh("Service", NS, [_ours("Service", "kept"), _ours("Service", "new")])
    assert cache.get("Service", NS, "flux") is None
    assert cache.get("Service", NS, "new") is not None
    assert cache.get("Service", NS, "kept") is indexes.by_kind["Service"][(NS, "kept")][0]
    cache.refresh("Service", "elsewhere", [])  # another namespace's listing: none of these
    assert cache.get("Service", NS, "new") is not None


def test_a_gone_resource_takes_what_was_written_for_it_along() -> None:
    cache = WatchCache({})
    cache.wrote({"kind": "FluxDeployment", "metadata": {"name": "flux", "namespace": NS}})
    cache.wrote(_ours("Deployment", "flux-canary"))
    cache.wrote(_ours("ConfigMap", "flux-presets-a"))
    cache.forget(NS, "flux")
    assert cache.get("FluxDeployment", NS, "flux") is None
    assert cache.get("Deployment", NS, "flux-canary") is None
    assert cache.config_maps(NS, "flux") == ()

"""What the operator knows of the cluster without asking the API server: the objects
kopf's watches delivered (its indexes) and, until a watch delivers them, the operator's own
writes.

A reconciliation reads the resource and its children here, never from the API server: the
watches already carry every change, so a read would only repeat what is known (and on a
cluster, load kube-apiserver and the client's rate limit). kopf fills its indexes from the
initial listing of every indexed kind before it calls any handler, so by the time a
handler reconciles, the cache has seen everything that existed; ``ready`` says that
moment has come (the periodic pass and the requeues wait for it).

A write's answer is kept as what the cluster holds until the watch delivers something
newer: without it, a reconciliation that follows soon after (the Deployment's event
arrives before the Service's) would take a child just created for missing and create it
again, or write the same status twice. kopf replaces an index's value for each event, so
"newer" is "another value than the one the index held when we wrote".

kopf lists again when a watch resumes (after a pause for a peer of higher priority, or a
"410 Gone") but tells nobody of the objects deleted meanwhile: its index keeps them. The
periodic pass lists every kind once per round and ``refresh`` corrects the cache from the
listing, the way an informer's relist does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from flux_operator.render import MANAGER, OWNER_LABEL

Key = tuple[str, str]
"""An index key: ``(namespace, name)``; for ``CONFIG_MAPS_BY_OWNER``, ``(namespace, owner)``."""
Index = Mapping[Key, Iterable[dict[str, Any]]]
"""How the cache reads one of kopf's indexes (``kopf.Index``: a key to its values)."""

CONFIG_MAPS_BY_OWNER = "ConfigMapsByOwner"
"""The index of the operator's ConfigMaps by the FluxDeployment they belong to."""
CHILD_KINDS = (
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "HTTPRoute",
    "ScaledObject",
    "PersistentVolumeClaim",
    "Job",
)
"""The kinds of child indexed whoever made them: one of the same name made by something
else is a conflict the operator must see (and never take over). ConfigMaps are indexed
only when the operator's (their names are content hashes: nobody else's can collide)."""
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
CRDS = "CustomResourceDefinition"
"""The index of the CRDs the operator asks after (KEDA's ScaledObject's), by name under the
namespace key ``default`` (they are cluster-scoped): whether KEDA is installed is known
without a request, and changes as the CRD comes and goes."""


def keep(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object: a FluxDeployment whole; all of the operator's
    own children (less the managedFields, but for a Deployment's: the HPA handover reads
    them); of anything else only what says whose it is."""
    plain = {k: dict(v) if isinstance(v, Mapping) else v for k, v in body.items()}
    meta = dict(plain.get("metadata") or {})
    if kind == "FluxDeployment":
        return plain
    if meta.get("labels", {}).get("app.kubernetes.io/managed-by") == MANAGER:
        if kind != "Deployment":
            meta.pop("managedFields", None)
        return {**plain, "kind": kind, "metadata": meta}
    owned = ("name", "namespace", "uid", "resourceVersion", "labels", "ownerReferences")
    return {"kind": kind, "metadata": {k: meta[k] for k in owned if k in meta}}


class WatchCache:
    """The FluxDeployments and their children, by kind: ``indexes`` maps a kind
    (``Deployment``, ...) to kopf's index of it by ``(namespace, name)``."""

    def __init__(self, indexes: Mapping[str, Index]) -> None:
        self._indexes = indexes
        # (kind, namespace, name) -> (what we wrote, None for a deletion; the index's value
        # when we wrote it).
        self._written: dict[tuple[str, str, str], tuple[dict[str, Any] | None, object]] = {}
        # The ConfigMaps among them, by (namespace, owner): listed with the index's.
        self._written_maps: dict[Key, set[str]] = {}
        self.ready = asyncio.Event()
        self.writes = 0
        """How many writes of ours the cache was told of."""

    def _indexed(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        index = self._indexes.get(kind)
        values = index.get((namespace, name)) if index is not None else None
        last = None
        for value in values or ():
            last = value  # two only while one object replaces another of the same name
        return last

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last seen (None: absent)."""
        indexed = self._indexed(kind, namespace, name)
        key = (kind, namespace, name)
        written = self._written.get(key)
        if written is None:
            return indexed
        value, seen = written
        if indexed is seen:
            return value
        del self._written[key]  # the watch has caught up with our write
        return indexed

    def config_maps(self, namespace: str, owner: str) -> tuple[dict[str, Any], ...]:
        """The operator's ConfigMaps of ``owner``."""
        index = self._indexes.get(CONFIG_MAPS_BY_OWNER)
        names = {str(cm["metadata"]["name"]) for cm in (index or {}).get((namespace, owner), ())}
        written = self._written_maps.get((namespace, owner), set())
        found = [self.get("ConfigMap", namespace, name) for name in sorted(names | written)]
        # What the watch has caught up with needs no listing of its own any more.
        written -= {n for n in written if ("ConfigMap", namespace, n) not in self._written}
        if not written:
            self._written_maps.pop((namespace, owner), None)
        return tuple(cm for cm in found if cm is not None and _owner_of(cm) == owner)

    def wrote(self, obj: dict[str, Any]) -> None:
        """``obj`` is what the API server answered to a write of ours."""
        kind = obj["kind"]
        self._remember(kind, _namespace(obj), obj["metadata"]["name"], keep(kind, obj))

    def refresh(self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]]) -> None:
        """``items`` is a fresh listing of ``kind`` in ``namespace`` (None: all): what the
        cache holds otherwise (an object deleted while no watch ran, one created then) is
        corrected until the watch says more."""
        listed = {(_namespace(i), i["metadata"]["name"]): i for i in items}
        index = self._indexes.get(kind) or {}
        known = {key for key in index if namespace is None or key[0] == namespace}
        for ns, name in known | set(listed):
            fresh, held = listed.get((ns, name)), self.get(kind, ns, name)
            if fresh is None and held is None:
                continue
            if fresh is not None and held is not None and _version(fresh) == _version(held):
                continue
            self._remember(kind, ns, name, keep(kind, fresh) if fresh is not None else None)

    def removed(self, kind: str, namespace: str, name: str) -> None:
        """We deleted it (or found it gone)."""
        self._remember(kind, namespace, name, None)

    def _remember(self, kind: str, namespace: str, name: str, value: dict[str, Any] | None) -> None:
        self._written[(kind, namespace, name)] = (value, self._indexed(kind, namespace, name))
        self.writes += 1
        owner = _owner_of(value) if value is not None else None
        if kind == "ConfigMap" and owner is not None:
            self._written_maps.setdefault((namespace, owner), set()).add(name)

    def forget(self, namespace: str, name: str) -> None:
        """The FluxDeployment ``name`` is gone: drop what we wrote for it and its children
        (the garbage collector removes them)."""
        for key, (value, _) in list(self._written.items()):
            if key[1] == namespace and (key[2] == name or _owner_of(value) == name):
                del self._written[key]
        self._written_maps.pop((namespace, name), None)


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace") or "default")


def _version(obj: dict[str, Any]) -> Any:
    return obj["metadata"].get("resourceVersion")


def _owner_of(obj: dict[str, Any] | None) -> str | None:
    """The FluxDeployment a child of the operator's belongs to (its label)."""
    if obj is None:
        return None
    owner = obj.get("metadata", {}).get("labels", {}).get(OWNER_LABEL)
    return str(owner) if owner is not None else None

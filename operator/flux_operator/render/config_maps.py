"""The immutable, content-named ConfigMaps: a revision's presets and the blocklist."""

from __future__ import annotations

from typing import Any

from flux_operator.render.naming import (
    BLOCKLIST_FILE,
    KIND_LABEL,
    PRESETS_HASH_ANNOTATION,
    Owner,
    Revision,
    blocklist_config_map_name,
    blocklist_hash,
    common_labels,
    object_metadata,
    presets_files,
)
from flux_operator.spec import FluxDeploymentSpec


def render_presets_config_map(
    owner: Owner, spec: FluxDeploymentSpec, revision: Revision
) -> dict[str, Any]:
    """The immutable presets ConfigMap of a revision, with the experiments beside the
    presets (only for the spec's own presets: a rollback reuses the one already in the
    cluster, experiments included)."""
    labels = {**common_labels(owner), KIND_LABEL: "presets"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(
            owner,
            revision.presets_config_map,
            labels,
            {PRESETS_HASH_ANNOTATION: revision.presets_hash},
        ),
        "immutable": True,
        "data": presets_files(spec),
    }


def render_blocklist_config_map(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any] | None:
    digest = blocklist_hash(spec)
    if digest is None or spec.safety is None or spec.safety.blocklist is None:
        return None
    labels = {**common_labels(owner), KIND_LABEL: "blocklist"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(owner, blocklist_config_map_name(owner.name, digest), labels),
        "immutable": True,
        "data": {BLOCKLIST_FILE: "".join(f"{term}\n" for term in spec.safety.blocklist)},
    }

"""What every child shares: ports, mount points, labels, annotations, owner references,
and a revision's identity (release, image, presets) with the names derived from it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from flux_contract.experiments import EXPERIMENTS_FILE, Experiment, experiments_to_file
from flux_contract.presets import StylePreset, presets_to_files
from flux_operator.spec import (
    GROUP,
    KIND,
    VERSION,
    FluxDeploymentSpec,
    LoraSpec,
    experiments_as_written,
    parse_experiments,
)

HTTP_PORT = 8080
GRPC_PORT = 50051
METRICS_PORT = 9090
SERVER_PORTS = (("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT))
"""The server's ports by name: the container's, the Service's (``targetPort`` by name)."""

MODEL_DIR = "/models"
PRESETS_DIR = "/etc/fluxserve/presets"
SAFETY_DIR = "/etc/fluxserve/safety"
API_KEYS_DIR = "/etc/fluxserve/api-keys"
LORA_CONFIGMAP_DIR = "/etc/fluxserve/loras"
LORA_PVC_DIR = "/loras"
CACHE_DIR = "/cache"
BLOCKLIST_FILE = "blocklist.txt"

MANAGER = "fluxserve-operator"
FIELD_MANAGER = MANAGER
"""The operator's field manager in server-side apply."""
APP_NAME = "fluxserve-server"
INSTANCE_LABEL = "app.kubernetes.io/instance"
NAME_LABEL = "app.kubernetes.io/name"
OWNER_LABEL = f"{GROUP}/fluxdeployment"
KIND_LABEL = f"{GROUP}/config"
PRESETS_HASH_ANNOTATION = f"{GROUP}/presets-hash"
BLOCKLIST_HASH_ANNOTATION = f"{GROUP}/blocklist-hash"
REVISION_ANNOTATION = f"{GROUP}/revision"
ROLLBACK_ANNOTATION = f"{GROUP}/rollback-to"
PROMOTE_ANNOTATION = f"{GROUP}/canary-promote"
"""Set to the canary's release (``python -m flux_operator promote NAME``): promote now."""
ABORT_ANNOTATION = f"{GROUP}/canary-abort"
"""Set to the canary's release (``python -m flux_operator abort NAME``): abort now."""

# Long enough for a rolling update to empty the Service's endpoints before SIGTERM.
PRESTOP_SLEEP_SECONDS = 5
# 24 GB of weights from a network volume can take many minutes: 10 s x 180 = 30 min.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURE_THRESHOLD = 180


@dataclass(frozen=True)
class Owner:
    """The FluxDeployment the children belong to."""

    kind: ClassVar[str] = KIND
    name: str
    namespace: str | None = None
    uid: str | None = None


@dataclass(frozen=True)
class Revision:
    """What one revision runs: the code (image), the presets and the LoRA adapters,
    restored together."""

    release: str
    image: str
    presets_hash: str
    presets_config_map: str
    loras: str = ""
    """``spec.loras`` as canonical JSON ("" for none): an adapter added (a promoted
    training) is a new revision, so it ships through the rollout strategy, and a rollback
    runs the adapters of the revision it restores."""


def loras_key(loras: Sequence[LoraSpec]) -> str:
    """The adapters as the canonical JSON a revision keeps ("" for none)."""
    if not loras:
        return ""
    items = [lora.model_dump(mode="json", by_alias=True, exclude_none=True) for lora in loras]
    return json.dumps(items, sort_keys=True, separators=(",", ":"))


def revision_loras(revision: Revision) -> list[LoraSpec]:
    return [LoraSpec.model_validate(item) for item in json.loads(revision.loras or "[]")]


def content_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def image_ref(spec: FluxDeploymentSpec) -> str:
    """The image to run: ``image`` as written when it pins a tag or digest, else
    ``image:release``."""
    last = spec.image.rsplit("/", 1)[-1]
    if "@" in spec.image or ":" in last:
        return spec.image
    return f"{spec.image}:{spec.release}"


def presets_configmap_data(
    presets: Mapping[str, StylePreset], experiments: Sequence[Experiment]
) -> dict[str, str]:
    """The presets ConfigMap's ``data``: a file per preset under its encoded key, and
    ``_experiments.json`` when experiments run (absent otherwise, so a deployment
    without experiments keeps its ConfigMap and its hash as before). The ConfigMap is
    content-hashed per revision, so a change of weights is a new revision and a rollback
    restores the experiments with the presets."""
    data = presets_to_files(presets)
    if experiments:
        data[EXPERIMENTS_FILE] = experiments_to_file(experiments)
    return data


def presets_files(spec: FluxDeploymentSpec) -> dict[str, str]:
    """The presets ConfigMap's data: the presets and, when there are any, the experiments
    (so their weights are part of the revision's hash; without experiments the data and
    hash are what they were before experiments existed). ValueError for experiments the
    operator's checks refuse (the reconciler never renders such a spec)."""
    written = experiments_as_written(spec.experiments)
    experiments, problems = parse_experiments(written, list(spec.style_presets))
    if problems:
        raise ValueError("; ".join(problems))
    return presets_configmap_data(spec.style_presets, experiments)


def presets_hash(spec: FluxDeploymentSpec) -> str:
    return content_hash(presets_files(spec))


def presets_config_map_name(owner_name: str, digest: str) -> str:
    return f"{owner_name}-presets-{digest}"


def blocklist_config_map_name(owner_name: str, digest: str) -> str:
    return f"{owner_name}-blocklist-{digest}"


def blocklist_hash(spec: FluxDeploymentSpec) -> str | None:
    if spec.safety is None or spec.safety.blocklist is None:
        return None
    return content_hash(spec.safety.blocklist)


def desired_revision(owner: Owner, spec: FluxDeploymentSpec) -> Revision:
    """The revision the spec asks for (before any rollback)."""
    digest = presets_hash(spec)
    return Revision(
        release=spec.release,
        image=image_ref(spec),
        presets_hash=digest,
        presets_config_map=presets_config_map_name(owner.name, digest),
        loras=loras_key(spec.loras),
    )


def selector_labels(owner: Owner) -> dict[str, str]:
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: owner.name}


def selector_string(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(owner).items())


def label_value(value: str) -> str:
    # Label values: 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return cleaned.strip("._-") or "unknown"


def common_labels(owner: Owner, release: str | None = None) -> dict[str, str]:
    labels = {
        **selector_labels(owner),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "fluxserve",
        "app.kubernetes.io/managed-by": MANAGER,
        OWNER_LABEL: owner.name,
    }
    if release is not None:
        labels["app.kubernetes.io/version"] = label_value(release)
    return labels


def object_metadata(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner.namespace:
        meta["namespace"] = owner.namespace
    if annotations:
        meta["annotations"] = annotations
    if owner.uid:
        # The reference kopf.adopt() would add, rendered here so that rendering stays pure
        # and `render` shows it; without a uid (`render` of a file) there is no owner yet.
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def child_metadata(owner: Owner) -> dict[str, Any]:
    """The metadata of the child named like its owner, with the common labels (the
    Service, the NetworkPolicy, the HPA)."""
    return object_metadata(owner, owner.name, common_labels(owner))

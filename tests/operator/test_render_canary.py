"""What a canary renders to: two Deployments and their track Services, valid for Kubernetes
1.33 strictly; and the HTTPRoute, valid against the Gateway API v1 shape written below
(kubernetes-validate knows only built-in kinds)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from flux_operator.reconcile.canary_pods import split_pods
from flux_operator.render import (
    TRACK_LABEL,
    CanaryRun,
    Owner,
    Revision,
    desired_revision,
    render_all,
    render_canary_deployment,
    render_children,
    render_http_route,
    render_stable_deployment,
    render_track_services,
)
from flux_operator.spec import FluxDeployment, FluxDeploymentSpec, GatewaySpec

EXAMPLES = Path(__file__).parent / "examples"
K8S_VERSION = "1.33.0"
OWNER = Owner(name="flux-dev", namespace="studio", uid="6f1c0a52-0000-4000-8000-000000000001")
GATEWAY = GatewaySpec.model_validate(
    {
        "parentRefs": [{"name": "inference-gw", "namespace": "infra"}],
        "hostnames": ["flux.example.com"],
    }
)

# The parts of HTTPRoute (gateway.networking.k8s.io/v1, Gateway API v1.2 standard channel)
# the operator writes, with the published bounds and patterns; unknown fields refused.
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_HOSTNAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
HTTPROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _NAME, "namespace": _NAME},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "group": {"type": "string", "maxLength": 253},
                            "kind": {"type": "string", "minLength": 1, "maxLength": 63},
                            "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                            "name": _NAME,
                            "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {
                                                    "enum": [
                                                        "Exact",
                                                        "PathPrefix",
                                                        "RegularExpression",
                                                    ]
                                                },
                                                "value": {"type": "string", "maxLength": 1024},
                                            },
                                        }
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "group": {"type": "string", "maxLength": 253},
                                        "kind": {"type": "string", "minLength": 1},
                                        "name": _NAME,
                                        "namespace": {"type": "string", "maxLength": 63},
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {
                                            "type": "integer",
                                            "minimum": 0,
                                            "maximum": 1000000,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _spec(name: str) -> FluxDeploymentSpec:
    doc = yaml.safe_load((EXAMPLES / "good" / f"{name}.yaml").read_text())
    return FluxDeployment.model_validate(doc).spec


def _rendered(spec: FluxDeploymentSpec, revision: Revision | None = None) -> dict[str, Any]:
    return {o["kind"]: o for o in render_all(OWNER, spec, revision) if o["kind"] != "ConfigMap"}


def _canary_set(spec_name: str = "full") -> dict[str, dict[str, Any]]:
    spec = _spec(spec_name)
    stable_revision = desired_revision(OWNER, spec.model_copy(update={"release": "v1.0.0"}))
    stable = _rendered(spec, stable_revision)
    new = _rendered(spec)
    services = render_track_services(new["Service"])
    return {
        "stable": render_stable_deployment(stable["Deployment"], replicas=3),
        "canary": render_canary_deployment(new["Deployment"], replicas=1),
        "service": new["Service"],
        "service-stable": services[0],
        "service-canary": services[1],
        "route": render_http_route(new["Service"], GATEWAY, canary_weight=10),
    }


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("spec_name", ["full", "minimal-hub", "suspended-cpu-digest"])
def test_every_built_in_object_is_valid_for_kubernetes_1_33_strictly(spec_name: str) -> None:
    objects = _canary_set(spec_name)
    for key in ("stable", "canary", "service-stable", "service-canary"):
        kubernetes_validate.validate(objects[key], K8S_VERSION, strict=True)


def test_http_route_has_the_gateway_api_shape() -> None:
    route = _canary_set()["route"]
    checked = {k: v for k, v in route.items()}
    checked["metadata"] = {k: route["metadata"][k] for k in ("name", "namespace")}
    jsonschema.validate(checked, HTTPROUTE_SCHEMA)
    # The schema would catch a misspelt field.
    broken = copy.deepcopy(checked)
    broken["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, HTTPROUTE_SCHEMA)


def test_each_service_selects_its_track_and_the_shared_one_both() -> None:
    objects = _canary_set()
    stable_pods = objects["stable"]["spec"]["template"]["metadata"]["labels"]
    canary_pods = objects["canary"]["spec"]["template"]["metadata"]["labels"]
    assert stable_pods[TRACK_LABEL] == "stable" and canary_pods[TRACK_LABEL] == "canary"
    shared = objects["service"]["spec"]["selector"]
    assert _selects(shared, stable_pods) and _selects(shared, canary_pods)
    assert objects["service-stable"]["metadata"]["name"] == "flux-dev-stable"
    assert objects["service-canary"]["metadata"]["name"] == "flux-dev-canary"
    stable_only = objects["service-stable"]["spec"]["selector"]
    canary_only = objects["service-canary"]["spec"]["selector"]
    assert _selects(stable_only, stable_pods) and not _selects(stable_only, canary_pods)
    assert _selects(canary_only, canary_pods) and not _selects(canary_only, stable_pods)
    assert objects["service-stable"]["spec"]["ports"] == objects["service"]["spec"]["ports"]


def test_the_canary_deployment_runs_the_new_revision_beside_the_stable_one() -> None:
    objects = _canary_set()
    stable, canary = objects["stable"], objects["canary"]
    assert canary["metadata"]["name"] == "flux-dev-canary"
    assert stable["metadata"]["name"] == "flux-dev"
    (stable_container,) = stable["spec"]["template"]["spec"]["containers"]
    (canary_container,) = canary["spec"]["template"]["spec"]["containers"]
    assert stable_container["image"].endswith(":v1.0.0")
    assert canary_container["image"].endswith(":v1.4.2")
    assert "--release=v1.4.2" in canary_container["args"]
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 1)
    # The stable selector is the one the Deployment was created with (immutable); the
    # canary's own selector keeps it off the stable pods.
    assert TRACK_LABEL not in stable["spec"]["selector"]["matchLabels"]
    canary_selector = canary["spec"]["selector"]["matchLabels"]
    assert canary_selector[TRACK_LABEL] == "canary"
    assert not _selects(canary_selector, stable["spec"]["template"]["metadata"]["labels"])
    assert _selects(canary_selector, canary["spec"]["template"]["metadata"]["labels"])
    # Owned by the FluxDeployment like every child.
    assert canary["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid


def test_stable_replicas_can_stay_with_the_hpa() -> None:
    stable = _rendered(_spec("full"))["Deployment"]  # autoscaling on: no replicas rendered
    assert "replicas" not in render_stable_deployment(stable, replicas=None)["spec"]
    assert render_canary_deployment(stable, replicas=2)["spec"]["replicas"] == 2


def test_the_inputs_are_not_modified() -> None:
    rendered = _rendered(_spec("full"))
    before = copy.deepcopy(rendered)
    render_stable_deployment(rendered["Deployment"], 2)
    render_canary_deployment(rendered["Deployment"], 1)
    render_track_services(rendered["Service"])
    render_http_route(rendered["Service"], GATEWAY, 50)
    assert rendered == before


@pytest.mark.parametrize("weight", [0, 10, 50, 100])
def test_http_route_carries_the_weights(weight: int) -> None:
    service = _rendered(_spec("full"))["Service"]
    route = render_http_route(service, GATEWAY, canary_weight=weight)
    assert route["metadata"]["name"] == "flux-dev"
    assert route["metadata"]["namespace"] == "studio"
    assert route["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "inference-gw",
            "namespace": "infra",
        }
    ]
    assert route["spec"]["hostnames"] == ["flux.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]] == [
        ("flux-dev-stable", 8080, 100 - weight),
        ("flux-dev-canary", 8080, weight),
    ]


def test_http_route_refuses_a_weight_outside_0_to_100() -> None:
    service = _rendered(_spec("full"))["Service"]
    with pytest.raises(ValueError, match="canary_weight must be 0-100, got 101"):
        render_http_route(service, GATEWAY, canary_weight=101)


def test_http_route_without_hostnames_matches_every_host() -> None:
    service = _rendered(_spec("full"))["Service"]
    gateway = GatewaySpec.model_validate({"parentRefs": [{"name": "gw", "sectionName": "https"}]})
    route = render_http_route(service, gateway, canary_weight=0)
    assert "hostnames" not in route["spec"]
    assert route["spec"]["parentRefs"][0]["sectionName"] == "https"
    assert "namespace" not in route["spec"]["parentRefs"][0]


def test_the_podmonitor_copies_the_labels_analysis_selects_on_from_both_tracks() -> None:
    import re

    monitor = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy/monitoring/podmonitor.yaml").read_text()
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    objects = _canary_set()
    copied: dict[str, set[str]] = {}
    for key in ("stable", "canary"):
        labels = objects[key]["spec"]["template"]["metadata"]["labels"]
        # Kubernetes service discovery names each pod label __meta_kubernetes_pod_label_<k>,
        # every character outside [A-Za-z0-9_] replaced by "_".
        meta = {
            "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", k): v
            for k, v in labels.items()
        }
        for relabel in endpoint["relabelings"]:
            (source,) = relabel["sourceLabels"]
            assert source in meta, f"{key} pods have no label behind {source}"
            copied.setdefault(relabel["targetLabel"], set()).add(meta[source])
    assert copied["track"] == {"stable", "canary"}
    assert copied["release"] == {"v1.0.0", "v1.4.2"}
    assert copied["fluxdeployment"] == {"flux-dev"}


def _canary_spec(replicas: int = 4, gateway: bool = True) -> FluxDeploymentSpec:
    spec = _spec("minimal-hub").model_dump(by_alias=True, exclude_none=True)
    spec["replicas"] = replicas
    spec["rollout"] = {
        "strategy": "Canary",
        "canary": {"maxSurge": 1, "steps": [{"weight": 50, "pause": "10m"}]},
    }
    if gateway:
        spec["gateway"] = GATEWAY.model_dump(by_alias=True, exclude_none=True)
    return FluxDeploymentSpec.model_validate(spec)


def _kinds_and_names(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_all_canary_objects_in_apply_order_running_or_not() -> None:
    """``render_children`` with a running canary: what the reconciler applies."""
    spec = _canary_spec()
    old = desired_revision(OWNER, spec.model_copy(update={"release": "v0.2.0"}))
    new = desired_revision(OWNER, spec)
    split = split_pods(total=4, weight=50, max_surge=1)
    run = CanaryRun(new, 50, stable_replicas=split.stable, canary_replicas=split.canary)
    running = render_children(OWNER, spec, old, run)
    objects = [o for o in running.objects if o["kind"] != "ConfigMap"]
    assert _kinds_and_names(objects) == [
        ("Deployment", "flux-dev"),
        ("Deployment", "flux-dev-canary"),
        ("Service", "flux-dev"),
        ("Service", "flux-dev-stable"),
        ("Service", "flux-dev-canary"),
        ("HTTPRoute", "flux-dev"),
    ]
    # The presets ConfigMap is the new revision's: the old one's is already in the cluster.
    maps = [o for o in running.objects if o["kind"] == "ConfigMap"]
    assert [m["metadata"]["name"] for m in maps] == [new.presets_config_map]
    assert [objects[0]["spec"]["replicas"], objects[1]["spec"]["replicas"]] == [3, 2]
    assert _image(objects[0]) == old.image and _image(objects[1]) == new.image
    assert [b["weight"] for b in objects[5]["spec"]["rules"][0]["backendRefs"]] == [50, 50]
    assert ("Deployment", "flux-dev-canary") not in running.absent

    between = render_children(OWNER, spec)
    assert between.objects == render_all(OWNER, spec)
    assert _kinds_and_names(between.objects)[1:] == [
        ("Deployment", "flux-dev"),
        ("Service", "flux-dev"),
        ("Service", "flux-dev-stable"),
        ("Service", "flux-dev-canary"),
        ("HTTPRoute", "flux-dev"),
    ]
    assert between.objects[1]["spec"]["replicas"] == 4  # as rendered: spec.replicas
    route = between.objects[-1]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    # Between canaries NAME-canary goes, as do the children this spec has none of.
    assert between.absent == [
        ("Deployment", "flux-dev-canary"),
        ("NetworkPolicy", "flux-dev"),
        ("HorizontalPodAutoscaler", "flux-dev"),
        ("ScaledObject", "flux-dev"),
        ("ScaledObject", "flux-dev-canary"),
        ("HorizontalPodAutoscaler", "flux-dev-front"),
    ]

    no_gateway = render_children(OWNER, _canary_spec(gateway=False), old, run)
    kinds = [o["kind"] for o in no_gateway.objects if o["kind"] != "ConfigMap"]
    assert kinds == ["Deployment", "Deployment", "Service", "Service", "Service"]
    assert ("HTTPRoute", "flux-dev") in no_gateway.absent


def _image(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])

"""What a FluxDeployment renders to: strictly valid for Kubernetes 1.33, and carrying
what the server and the cluster need (GPU, probes, security, flags for every feature)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flux_contract.presets import presets_from_files
from flux_operator.cli import main as cli_main
from flux_operator.render import Owner, Revision, desired_revision, render_all, server_args
from flux_operator.spec import CacheSpec, FluxDeployment, FluxDeploymentSpec, SafetySpec

EXAMPLES = Path(__file__).parent / "examples"
K8S_VERSION = "1.33.0"
OWNER = Owner(name="flux-dev", namespace="studio", uid="6f1c0a52-0000-4000-8000-000000000001")


def _spec(name: str) -> FluxDeploymentSpec:
    doc = yaml.safe_load((EXAMPLES / "good" / f"{name}.yaml").read_text())
    return FluxDeployment.model_validate(doc).spec


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["kind"] + ("/" + o["metadata"]["name"] if o["kind"] == "ConfigMap" else ""): o
        for o in objects
    }


def _variants() -> list[tuple[str, FluxDeploymentSpec]]:
    full = _spec("full")
    return [
        ("full", full),
        ("minimal-hub", _spec("minimal-hub")),
        ("suspended-cpu-digest", _spec("suspended-cpu-digest")),
        ("no-autoscaling", full.model_copy(update={"autoscaling": None, "replicas": 3})),
        ("no-presets", full.model_copy(update={"style_presets": {}})),
    ]


@pytest.mark.parametrize(
    ("label", "spec"), _variants(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_object_is_valid_for_kubernetes_1_33_strictly(
    label: str, spec: FluxDeploymentSpec
) -> None:
    objects = render_all(OWNER, spec)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_would_catch_a_typo() -> None:
    # Guards the test above: the validator really is strict about unknown fields.
    deployment = next(o for o in render_all(OWNER, _spec("full")) if o["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_runs_on_gpus_safely() -> None:
    spec = _spec("full")
    deployment = next(o for o in render_all(OWNER, spec) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/acme/fluxserve-server:v1.4.2"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sec = container["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"] == {"drop": ["ALL"]}
    startup = container["startupProbe"]
    assert startup["grpc"]["port"] == 50051
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "preStop" in container["lifecycle"]
    assert pod["terminationGracePeriodSeconds"] > spec.rollout.drain_timeout_seconds
    assert deployment["spec"]["progressDeadlineSeconds"] == 900
    # Autoscaling on: replicas left to the HPA.
    assert "replicas" not in deployment["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "flux-dev"
    assert labels["app.kubernetes.io/version"] == "v1.4.2"
    owner_ref = deployment["metadata"]["ownerReferences"][0]
    assert owner_ref["uid"] == OWNER.uid and owner_ref["controller"] is True


def test_cpu_spec_has_no_gpu_and_fixed_replicas() -> None:
    spec = _spec("suspended-cpu-digest")
    deployment = next(o for o in render_all(OWNER, spec) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert "tolerations" not in pod
    assert set(pod["containers"][0]["resources"]["limits"]) == {"memory"}
    assert deployment["spec"]["replicas"] == 0
    assert pod["containers"][0]["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    assert "--device=cpu" in pod["containers"][0]["args"]


def test_presets_config_map_is_immutable_hashed_and_mounted() -> None:
    spec = _spec("full")
    objects = render_all(OWNER, spec)
    revision = desired_revision(OWNER, spec)
    cm = next(o for o in objects if o["metadata"]["name"] == revision.presets_config_map)
    assert cm["immutable"] is True
    assert revision.presets_config_map == f"flux-dev-presets-{revision.presets_hash}"
    assert presets_from_files(cm["data"]) == spec.style_presets
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    assert (
        template["metadata"]["annotations"]["fluxserve.dev/presets-hash"] == revision.presets_hash
    )
    presets_volume = next(v for v in template["spec"]["volumes"] if v["name"] == "presets")
    assert presets_volume["configMap"]["name"] == revision.presets_config_map


def test_presets_change_changes_name_hash_and_pod_template() -> None:
    spec = _spec("full")
    changed = spec.model_copy(
        update={"style_presets": {**spec.style_presets, "noir": spec.style_presets["cyberpunk"]}}
    )
    a, b = desired_revision(OWNER, spec), desired_revision(OWNER, changed)
    assert a.presets_hash != b.presets_hash and a.presets_config_map != b.presets_config_map
    # Same presets → same name: applying twice creates nothing new.
    assert desired_revision(OWNER, spec) == a


def test_hpa_scales_on_queue_depth() -> None:
    hpa = next(
        o for o in render_all(OWNER, _spec("full")) if o["kind"] == "HorizontalPodAutoscaler"
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 8)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "fluxserve_queue_depth"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


def test_service_ports() -> None:
    service = next(o for o in render_all(OWNER, _spec("full")) if o["kind"] == "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": 8080, "grpc": 50051, "metrics": 9090}


def test_every_feature_switch_becomes_a_server_flag() -> None:
    spec = _spec("full")
    args = server_args(spec, desired_revision(OWNER, spec))
    expected = [
        "--model=/models",
        "--dtype=bfloat16",
        "--max-batch-size=4",
        "--max-delay-ms=50",
        "--presets-dir=/etc/fluxserve/presets",
        "--release=v1.4.2",
        "--device=cuda",
        "--lora=ink=/models/loras/ink.safetensors:0.8",
        "--lora=pixel=/etc/fluxserve/loras/pixel:1",
        "--lora=film=/loras/film:1",
        "--blocklist=/etc/fluxserve/safety/blocklist.txt",
        "--safety-model=/models/safety",
        "--safety-threshold=0.8",
        "--audit-log=-",
        "--audit-hash-prompts",
        "--api-keys=/etc/fluxserve/api-keys/keys",
        "--cache-bytes=268435456",
        "--cache-ttl=3600",
        "--enable-editing",
        "--kontext-model=black-forest-labs/FLUX.1-Kontext-dev",
        "--vqa-model=/models/vqa",
        "--max-image-pixels=4194304",
    ]
    for flag in expected:
        assert flag in args, flag
    deployment = next(o for o in render_all(OWNER, spec) if o["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLUXSERVE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis",
        "key": "url",
    }
    blocklist = next(o for o in render_all(OWNER, spec) if "-blocklist-" in o["metadata"]["name"])
    assert blocklist["data"]["blocklist.txt"] == "gore\nextreme violence\n"


def test_cache_without_a_size_keeps_the_servers_default() -> None:
    spec = _spec("minimal-hub")
    cached = spec.model_copy(update={"cache": CacheSpec(ttl_seconds=60)})
    args = server_args(cached, desired_revision(OWNER, cached))
    assert "--cache-ttl=60" in args
    assert not any(a.startswith("--cache-bytes") for a in args)
    off = spec.model_copy(update={"cache": CacheSpec(bytes=0)})
    assert "--cache-bytes=0" in server_args(off, desired_revision(OWNER, off))


def test_hub_model_reads_its_token_from_the_secret() -> None:
    spec = _spec("minimal-hub")
    deployment = next(o for o in render_all(OWNER, spec) if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--model=black-forest-labs/FLUX.1-schnell" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert container["image"] == "ghcr.io/fluxserve/fluxserve-server:v0.3.0"


def test_a_rollback_revision_reuses_the_old_config_map() -> None:
    spec = _spec("full")
    old = Revision("v1.4.1", "ghcr.io/acme/fluxserve-server:v1.4.1", "abc", "flux-dev-presets-abc")
    objects = render_all(OWNER, spec, old)
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    assert "flux-dev-presets-abc" not in names  # it exists already; immutable, never rewritten
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.4.1")


def test_render_command_prints_valid_objects(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["render", str(EXAMPLES / "good" / "full.yaml")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Service",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_render_command_names_the_bad_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["render", str(EXAMPLES / "bad" / "min-over-max.yaml")]) == 1
    err = capsys.readouterr().err
    assert "spec.autoscaling" in err and "minReplicas must be <= maxReplicas" in err


def test_the_batching_policy_is_a_flag_only_when_not_the_default() -> None:
    spec = _spec("full")
    assert spec.batching.wait == "when-busy"
    revision = desired_revision(OWNER, spec)
    assert not any(a.startswith("--batch-wait") for a in server_args(spec, revision))
    spec.batching.wait = "always"
    assert "--batch-wait=always" in server_args(spec, revision)


@pytest.mark.parametrize("name", ["full", "minimal-hub", "ab-experiment"])
def test_render_matches_the_golden_file(name: str) -> None:
    # The reviewed output: a change to what the operator renders shows up as a diff here.
    # Regenerate with FLUXSERVE_UPDATE_GOLDEN=1 after checking the change is intended.
    golden = Path(__file__).parent / "golden" / f"{name}.yaml"
    doc = yaml.safe_load((EXAMPLES / "good" / f"{name}.yaml").read_text())
    fd = FluxDeployment.model_validate(doc)
    owner = Owner(fd.metadata["name"], fd.metadata.get("namespace"))
    text = yaml.safe_dump_all(render_all(owner, fd.spec), sort_keys=False)
    if os.environ.get("FLUXSERVE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"render output changed; see {golden.name}"


def test_the_image_safety_model_becomes_its_server_flags() -> None:
    spec = _spec("full")
    safety = {"model": "/models/safety", "imageModel": "/models/nsfw", "imageThreshold": 0.3}
    spec = spec.model_copy(update={"safety": SafetySpec.model_validate(safety)})
    args = server_args(spec, desired_revision(OWNER, spec))
    assert "--image-safety-model=/models/nsfw" in args
    assert "--image-safety-threshold=0.3" in args
    no_threshold = spec.model_copy(
        update={"safety": SafetySpec.model_validate({"imageModel": "/models/nsfw"})}
    )
    plain = server_args(no_threshold, desired_revision(OWNER, no_threshold))
    assert not any(a.startswith("--image-safety-threshold") for a in plain)
    with pytest.raises(ValueError, match="imageThreshold needs imageModel"):
        SafetySpec.model_validate({"imageThreshold": 0.3})

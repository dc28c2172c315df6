"""What ``spec.queue``, scale to zero and ``spec.modelCache`` render to: fronts and workers
whose flags the server's own parser accepts, KEDA ScaledObjects that KEDA's published CRD
accepts (tests/operator/keda), the HPA kept at one pod without KEDA, and the model cache's
PVC, Job and mounts. All strictly valid for Kubernetes 1.33."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crdschema import validate

from flux_operator.cli import main as cli_main
from flux_operator.render import CanaryRun, Owner, desired_revision, render_children
from flux_operator.render.model_cache import COMPLETE_MARKER
from flux_operator.spec import FluxDeployment, FluxDeploymentSpec
from flux_server.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet" / "scale-to-zero.yaml"
KEDA_CRD = Path(__file__).parent / "keda" / "keda.sh_scaledobjects.yaml"
K8S_VERSION = "1.33.0"
OWNER = Owner(name="flux-dev", namespace="studio", uid="6f1c0a52-0000-4000-8000-000000000009")
SHA = "0123456789abcdef0123456789abcdef01234567"


def _spec(**changes: Any) -> FluxDeploymentSpec:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].update(changes)
    return FluxDeployment.model_validate(doc).spec


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] != "ConfigMap"]


@pytest.fixture(scope="module")
def keda_crd() -> dict[str, Any]:
    return yaml.safe_load(KEDA_CRD.read_text())


def test_a_queue_renders_fronts_on_cpus_and_gpu_workers() -> None:
    spec = _spec(autoscaling={"minReplicas": 1, "maxReplicas": 4})
    objects = render_children(OWNER, spec, keda=False).objects
    assert _kinds(objects) == [
        ("PersistentVolumeClaim", objects[1]["metadata"]["name"]),
        ("Job", objects[1]["metadata"]["name"]),
        ("Deployment", "flux-dev"),
        ("Deployment", "flux-dev-front"),
        ("Service", "flux-dev"),
        ("HorizontalPodAutoscaler", "flux-dev"),
        ("HorizontalPodAutoscaler", "flux-dev-front"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    worker, front = (_named(objects, "Deployment", n) for n in ("flux-dev", "flux-dev-front"))
    url = "--queue=redis://fluxserve-queue-valkey-primary.studio:6379"
    assert _server(worker)["args"][-3:] == [url, "--role=worker", "--track=stable"]
    assert _server(front)["args"][-3:] == [url, "--role=front", "--track=stable"]
    password = {"secretKeyRef": {"name": "fluxserve-queue", "key": "password"}}
    for pod in (worker, front):
        assert {"name": "FLUXSERVE_QUEUE_PASSWORD", "valueFrom": password} in _server(pod)["env"]
    # The front: no GPU, no model volume, no wait for the cache; its own selector.
    pod = front["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "initContainers" not in pod
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "cache", "presets"}
    assert _server(front)["resources"]["limits"] == {"memory": "1Gi"}
    assert front["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "fluxserve-front"
    assert worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "fluxserve-server"
    assert "replicas" not in front["spec"]  # the fronts' HPA's
    service = _named(objects, "Service", "flux-dev")
    assert service["spec"]["selector"] == front["spec"]["selector"]["matchLabels"]
    hpa = _named(objects, "HorizontalPodAutoscaler", "flux-dev-front")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "flux-dev-front"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    # Every flag, through the server's own parser.
    for deployment in (worker, front):
        args = [a for a in _server(deployment)["args"] if not a.startswith("--compile-cache")]
        settings = load_settings(args, {"FLUXSERVE_QUEUE_PASSWORD": "x"})
        assert settings.queue is not None and settings.queue_password == "x"
        assert settings.role == ("front" if deployment is front else "worker")


def test_the_queue_url_from_a_secret_is_never_a_flag() -> None:
    queue = {"urlSecretRef": {"name": "redis", "key": "url"}, "visibilityTimeoutSeconds": 45}
    objects = render_children(OWNER, _spec(queue=queue), keda=False).objects
    worker = _named(objects, "Deployment", "flux-dev")
    args, env = _server(worker)["args"], _server(worker)["env"]
    assert not any(a.startswith("--queue=") for a in args)
    assert "--visibility-timeout=45" in args
    secret = {"secretKeyRef": {"name": "redis", "key": "url"}}
    assert {"name": "FLUXSERVE_QUEUE", "valueFrom": secret} in env
    settings = load_settings(
        [a for a in args if not a.startswith("--compile-cache")],
        {"FLUXSERVE_QUEUE": "rediss://:pw@redis:6380"},
    )
    assert settings.queue == "rediss://:pw@redis:6380" and settings.visibility_timeout == 45


def test_minreplicas_zero_renders_a_scaled_object_keda_accepts(keda_crd: dict[str, Any]) -> None:
    objects = render_children(OWNER, _spec()).objects
    assert not [
        o for o in objects if o["metadata"]["name"] == "flux-dev" and "Horizontal" in o["kind"]
    ]
    scaled = _named(objects, "ScaledObject", "flux-dev")
    assert validate(keda_crd, copy.deepcopy(scaled)) == []
    spec = scaled["spec"]
    assert scaled["metadata"]["annotations"] == {
        "scaledobject.keda.sh/transfer-hpa-ownership": "true"
    }
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] == "flux-dev"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 4)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (15, 600)
    assert spec["fallback"]["replicas"] == 1 and spec["fallback"]["failureThreshold"] == 3
    queue, high = spec["triggers"][1], spec["triggers"][0]
    assert queue["metadata"]["url"] == "http://flux-dev.studio.svc:8080/queue"
    assert [high["metadata"]["valueLocation"], queue["metadata"]["valueLocation"]] == [
        "tracks.stable.high",
        "tracks.stable.normal",
    ]
    assert queue["metadata"]["targetValue"] == "4"
    assert queue["metadata"]["activationTargetValue"] == "0"
    running = spec["triggers"][2]
    assert running["type"] == "prometheus" and 'track!="canary"' in running["metadata"]["query"]
    # The CRD refuses what it should: the check is not vacuous.
    broken = copy.deepcopy(scaled)
    broken["spec"]["minReplicaCount"], broken["spec"]["maxReplicaCount"] = 5, 4
    assert validate(keda_crd, broken) != []
    del broken["spec"]["triggers"]
    assert validate(keda_crd, broken) != []


def test_without_keda_the_hpa_keeps_one_worker() -> None:
    children = render_children(OWNER, _spec(), keda=False)
    hpa = _named(children.objects, "HorizontalPodAutoscaler", "flux-dev")
    assert hpa["spec"]["minReplicas"] == 1
    assert ("ScaledObject", "flux-dev") in children.absent


def test_each_release_track_scales_on_its_own_stream(keda_crd: dict[str, Any]) -> None:
    steps = [{"weight": 25, "pause": "10m"}]
    spec = _spec(rollout={"strategy": "Canary", "canary": {"steps": steps}})
    stable = desired_revision(OWNER, spec.model_copy(update={"release": "v1.4.1"}))
    run = CanaryRun(revision=desired_revision(OWNER, spec), weight=25, canary_replicas=1)
    objects = render_children(OWNER, spec, stable, run).objects
    canary = _named(objects, "Deployment", "flux-dev-canary")
    assert (
        "--track=canary" in _server(canary)["args"] and "--role=worker" in _server(canary)["args"]
    )
    assert "replicas" not in canary["spec"]  # its ScaledObject's
    front = _named(objects, "Deployment", "flux-dev-canary-front")
    assert _server(front)["image"].endswith(":v1.4.2") and front["spec"]["replicas"] == 1
    assert "--track=canary" in _server(front)["args"]
    assert front["spec"]["selector"]["matchLabels"]["fluxserve.dev/track"] == "canary"
    services = {s["metadata"]["name"]: s for s in objects if s["kind"] == "Service"}
    assert (
        services["flux-dev-canary"]["spec"]["selector"] == front["spec"]["selector"]["matchLabels"]
    )
    scaled = _named(objects, "ScaledObject", "flux-dev-canary")
    assert validate(keda_crd, copy.deepcopy(scaled)) == []
    assert scaled["spec"]["scaleTargetRef"]["name"] == "flux-dev-canary"
    assert scaled["spec"]["minReplicaCount"] == 1  # it is there to be measured
    triggers = scaled["spec"]["triggers"]
    assert triggers[1]["metadata"]["valueLocation"] == "tracks.canary.normal"
    assert 'track="canary"' in triggers[2]["metadata"]["query"]
    for obj in objects:
        if obj["kind"] != "ScaledObject":
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_model_cache_is_filled_once_and_mounted_read_only() -> None:
    spec = _spec()
    objects = render_children(OWNER, spec).objects
    pvc = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    job = next(o for o in objects if o["kind"] == "Job")
    assert pvc["metadata"]["name"] == job["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce", "ReadOnlyMany"]
    assert pvc["spec"]["storageClassName"] == "filestore-rwx"
    download = job["spec"]["template"]["spec"]["containers"][0]
    assert download["command"][-3:] == ["black-forest-labs/FLUX.1-dev", SHA, f"/model-cache/{SHA}"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    } in download["env"]
    worker = _named(objects, "Deployment", "flux-dev")
    pod = worker["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["persistentVolumeClaim"] == {
        "claimName": pvc["metadata"]["name"],
        "readOnly": True,
    }
    (wait,) = pod["initContainers"]
    assert wait["command"][-1] == f"/model-cache/{SHA}/{COMPLETE_MARKER}"
    server = _server(worker)
    assert f"--model=/model-cache/{SHA}" in server["args"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in server["env"]
    assert "--compile-cache=/compile-cache" in server["args"]
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["model-cache"]["readOnly"] is True
    assert "readOnly" not in mounts["compile-cache"]  # kernels are written there
    # Another revision is another cache, beside the old one.
    other = _spec(modelCache={"revision": "f" * 40})
    assert render_children(OWNER, other).objects[1]["metadata"]["name"] != pvc["metadata"]["name"]


def test_an_oci_image_holds_the_weights_without_pvc_or_job() -> None:
    spec = _spec(modelCache={"revision": SHA, "image": "ghcr.io/acme/flux1-dev-weights:2024-08"})
    objects = render_children(OWNER, spec).objects
    assert not [o for o in objects if o["kind"] in ("PersistentVolumeClaim", "Job")]
    worker = _named(objects, "Deployment", "flux-dev")
    kubernetes_validate.validate(worker, K8S_VERSION, strict=True)
    pod = worker["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["image"]["reference"] == "ghcr.io/acme/flux1-dev-weights:2024-08"
    assert "initContainers" not in pod
    assert "--model=/model-cache" in _server(worker)["args"]


def test_the_startup_probe_is_sized_from_the_measured_phases() -> None:
    def threshold(spec: FluxDeploymentSpec) -> int:
        worker = _named(render_children(OWNER, spec).objects, "Deployment", "flux-dev")
        return int(_server(worker)["startupProbe"]["failureThreshold"])

    # From the model cache: 2 x (45 + 25 + 15) / 10 s = 17 -> the 30 floor (5 minutes).
    assert threshold(_spec()) == 30
    slow = {"startupSeconds": {"download": 900, "load": 300, "compile": 200, "warmup": 100}}
    cached = _spec(performance=slow)
    assert threshold(cached) == 120  # 2 x 600 / 10
    # From the hub, the download counts: 2 x 1500 / 10.
    hub = cached.model_copy(update={"model_cache": None})
    assert threshold(hub) == 300
    # Unmeasured: 30 minutes, as before.
    assert threshold(_spec(performance={})) == 180


def test_render_prints_the_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["render", str(EXAMPLE)]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert kinds.count("Deployment") == 2 and "ScaledObject" in kinds and "Job" in kinds


def test_a_front_mounts_the_adapters_it_checks_but_not_the_weights() -> None:
    loras = [
        {"name": "poster", "configMap": "poster-lora"},
        {"name": "ink", "pvc": {"claimName": "adapters", "subPath": "ink"}},
    ]
    objects = render_children(OWNER, _spec(loras=loras), keda=False).objects
    front = _named(objects, "Deployment", "flux-dev-front")
    names = {v["name"] for v in front["spec"]["template"]["spec"]["volumes"]}
    assert {"lora-0", "lora-1"} <= names and "model-cache" not in names
    mounts = {m["mountPath"] for m in _server(front)["volumeMounts"]}
    for arg in _server(front)["args"]:
        if arg.startswith("--lora="):
            path = arg.split("=", 2)[2].rsplit(":", 1)[0]
            assert any(path == m or path.startswith(m + "/") for m in mounts), arg


def test_the_podmonitor_scrapes_fronts_and_workers() -> None:
    # The fronts answer the requests: their metrics feed the dashboards and the canary
    # analysis, so deploy/monitoring's PodMonitor must select them as it does the workers.
    monitor = yaml.safe_load((ROOT / "deploy" / "monitoring" / "podmonitor.yaml").read_text())
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    objects = render_children(OWNER, _spec(), keda=False).objects
    for name in ("flux-dev", "flux-dev-front"):
        labels = _named(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert wanted <= labels.items(), name

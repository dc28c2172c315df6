"""FluxLoRATraining → its Job (or Kubeflow TrainJob): pure rendering, checked against
Kubernetes' own schema (kubernetes-validate) and, for the TrainJob, against Kubeflow
Trainer's published CRD (tests/operator/kubeflow, fetched from its v2.3.0 release).
Nothing of Kubeflow runs here: the TrainJob is only validated as the API server would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crdschema import validate

from flux_operator import crdgen
from flux_operator.cli import main as cli_main
from flux_operator.render.training import TrainingOwner, training_inputs
from flux_operator.render.training_job import render_training
from flux_operator.spec import FluxDeploymentSpec
from flux_operator.spec.training import FluxLoRATrainingSpec
from flux_trainer.cli import build_parser, config_from

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "training" / "poster-style.yaml"
KUBEFLOW_CRD = Path(__file__).parent / "kubeflow" / "trainer.kubeflow.org_trainjobs.yaml"
K8S_VERSION = "1.33.0"
OWNER = TrainingOwner("poster-style", "studio", "0b1c2d3e-0000-4000-8000-000000000001")


def training_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": "black-forest-labs/FLUX.1-dev",
        "release": "v1.5.0",
        "dataset": {"s3": "s3://acme-data/posters.tar.gz"},
        "hyperparameters": {"steps": 1500, "rank": 32, "learningRate": 0.0002, "qlora": True},
        "gpu": {"count": 2, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40S"}},
        "output": {"s3": "s3://acme-adapters/loras"},
    }
    spec.update(changes)
    return spec


def _render(**changes: Any) -> dict[str, Any]:
    spec = FluxLoRATrainingSpec.model_validate(training_spec(**changes))
    return render_training(OWNER, spec, training_inputs(spec, None))


def test_job_runs_the_trainer_with_the_specs_flags_on_gpus() -> None:
    job = _render()
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/fluxserve/fluxserve-server:v1.5.0"
    assert container["command"] == ["python", "-m", "flux_trainer"]
    # The trainer's own parser reads the arguments back to the spec's values.
    config = config_from(build_parser().parse_args(container["args"]))
    assert (config.steps, config.rank, config.learning_rate, config.qlora) == (1500, 32, 2e-4, True)
    assert config.dataset == "s3://acme-data/posters.tar.gz"
    assert config.upload == "s3://acme-adapters/loras/studio/poster-style"
    assert (config.device, config.resume) == ("cuda", True)
    assert container["args"][-1] == "--result-file=/dev/termination-log"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert job["spec"]["backoffLimit"] == 1
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FluxLoRATraining"


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = _render()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["runAsNonRoot"] is True
    volume_kinds = {k for v in pod["volumes"] for k in v if k != "name"}
    assert volume_kinds <= {"emptyDir", "persistentVolumeClaim", "configMap", "secret"}


def test_pvc_dataset_and_output_are_mounted() -> None:
    job = _render(
        dataset={"pvc": {"claimName": "designs", "subPath": "posters"}},
        output={"pvc": {"claimName": "adapters", "path": "poster-style/v1"}},
    )
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/dataset"]["readOnly"] is True and mounts["/dataset"]["subPath"] == "posters"
    assert mounts["/output"]["readOnly"] is False
    config = config_from(build_parser().parse_args(container["args"]))
    assert (config.dataset, config.output, config.upload) == (
        "/dataset",
        "/output/poster-style/v1",
        None,
    )


def test_model_and_image_come_from_the_referenced_flux_deployment() -> None:
    deployment = FluxDeploymentSpec.model_validate(
        {
            "release": "v1.4.1",
            "image": "ghcr.io/acme/fluxserve-server",
            "model": {
                "id": "black-forest-labs/FLUX.1-dev",
                "source": {"pvc": {"claimName": "flux-weights", "subPath": "FLUX.1-dev"}},
            },
        }
    )
    raw = training_spec(fluxDeploymentRef="flux-dev")
    del raw["baseModel"], raw["release"]
    spec = FluxLoRATrainingSpec.model_validate(raw)
    job = render_training(OWNER, spec, training_inputs(spec, deployment))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/fluxserve-server:v1.4.1"
    assert "--base=/models" in container["args"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    with pytest.raises(ValueError, match="FluxDeployment flux-dev not found"):
        training_inputs(spec, None)


def _without_transition_rules(node: Any) -> Any:
    """The CRD as the API server applies it on create: rules that compare with
    ``oldSelf`` (transition rules) only run on an update."""
    if isinstance(node, dict):
        out = {k: _without_transition_rules(v) for k, v in node.items()}
        rules = out.get("x-kubernetes-validations")
        if rules is not None:
            out["x-kubernetes-validations"] = [r for r in rules if "oldSelf" not in r["rule"]]
        return out
    if isinstance(node, list):
        return [_without_transition_rules(v) for v in node]
    return node


def test_kubeflow_engine_renders_a_train_job_its_crd_accepts() -> None:
    train_job = _render(engine="kubeflow")
    assert train_job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert train_job["kind"] == "TrainJob"
    crd = _without_transition_rules(yaml.safe_load(KUBEFLOW_CRD.read_text()))
    assert validate(crd, copy.deepcopy(train_job)) == []
    trainer = train_job["spec"]["trainer"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    assert trainer["args"][0] == "train" and trainer["numNodes"] == 1
    # The same CRD refuses what it should: the check is not vacuous.
    assert validate(crd, {**train_job, "spec": {"trainer": trainer}}) != []


def test_bad_hyperparameters_are_refused_by_the_crd_and_the_model() -> None:
    crd = crdgen.build_training_crd()
    resource = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxLoRATraining",
        "metadata": {"name": "poster-style"},
        "spec": training_spec(),
    }
    assert validate(crd, copy.deepcopy(resource)) == []
    for field, value, expect in (
        ("resolution", 520, "multiple of 16"),
        ("rank", 0, "less than the minimum"),
        ("learningRate", 0, "less than or equal to the minimum"),
    ):
        bad = copy.deepcopy(resource)
        bad["spec"]["hyperparameters"][field] = value
        errors = validate(crd, bad)
        assert any(field in path and expect in m for path, m in errors), (field, errors)
        with pytest.raises(ValueError):
            FluxLoRATrainingSpec.model_validate(bad["spec"])
    both = copy.deepcopy(resource)
    both["spec"]["fluxDeploymentRef"] = "flux-dev"
    assert any("exactly one of baseModel" in m for _, m in validate(crd, both))
    canary = copy.deepcopy(resource)
    canary["spec"]["promotion"] = "canary"
    assert any("needs target" in m for _, m in validate(crd, canary))


def test_render_command_prints_the_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deployment = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-dev", "namespace": "studio"},
        "spec": {
            "release": "v1.4.1",
            "model": {"id": "black-forest-labs/FLUX.1-dev", "source": {"hub": {}}},
        },
    }
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(deployment) + "---\n" + EXAMPLE.read_text())
    assert cli_main(["render", str(path)]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    (job,) = [o for o in objects if o["kind"] == "Job"]
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--steps=1500" in args and "--seed=7" in args
    assert "--base=black-forest-labs/FLUX.1-dev" in args


def test_render_command_names_the_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["hyperparameters"]["steps"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli_main(["render", str(path)]) == 1
    err = capsys.readouterr().err
    assert "poster-style: spec.hyperparameters.steps" in err and "greater than or equal to 1" in err

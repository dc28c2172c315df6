"""The training pod and the Job (engine ``job``) or Kubeflow TrainJob (engine
``kubeflow``) around it."""

from __future__ import annotations

from typing import Any

from flux_operator.render.naming import CACHE_DIR, MODEL_DIR
from flux_operator.render.pod_basics import place, restricted_container, restricted_pod
from flux_operator.render.training import (
    DATASET_DIR,
    NOT_RETRIABLE_EXIT_CODES,
    OUTPUT_DIR,
    TERMINATION_LOG,
    TrainingInputs,
    TrainingOwner,
    job_name,
    trainer_args,
    trainer_config,
    training_metadata,
)
from flux_operator.spec.training import FluxLoRATrainingSpec

CONTAINER = "trainer"
COMMAND = ["python", "-m", "flux_trainer"]
KUBEFLOW_API_VERSION = "trainer.kubeflow.org/v1alpha1"
_API_VERSIONS = {"Job": "batch/v1", "TrainJob": KUBEFLOW_API_VERSION}


def _env(spec: FluxLoRATrainingSpec, inputs: TrainingInputs) -> list[dict[str, Any]]:
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    ]
    if inputs.model_pvc is not None:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


def _resources(spec: FluxLoRATrainingSpec) -> dict[str, Any]:
    limits = {"memory": spec.resources.memory}
    if spec.gpu.count > 0:
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    return {
        "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
        "limits": limits,
    }


def _volumes(
    spec: FluxLoRATrainingSpec, inputs: TrainingInputs
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]

    def claim(name: str, claim_name: str, path: str, sub: str | None, read_only: bool) -> None:
        source = {"claimName": claim_name, "readOnly": read_only}
        volumes.append({"name": name, "persistentVolumeClaim": source})
        mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": read_only}
        if sub:
            mount["subPath"] = sub
        mounts.append(mount)

    if inputs.model_pvc is not None:
        claim("model", inputs.model_pvc[0], MODEL_DIR, inputs.model_pvc[1], True)
    if spec.dataset.pvc is not None:
        claim("dataset", spec.dataset.pvc.claim_name, DATASET_DIR, spec.dataset.pvc.sub_path, True)
    if spec.output.pvc is not None:
        claim("output", spec.output.pvc.claim_name, OUTPUT_DIR, None, False)
    else:
        volumes.append({"name": "output", "emptyDir": {}})
        mounts.append({"name": "output", "mountPath": OUTPUT_DIR})
    return volumes, mounts


def trainer_container(
    owner: TrainingOwner, spec: FluxLoRATrainingSpec, inputs: TrainingInputs
) -> dict[str, Any]:
    config = trainer_config(owner, spec, inputs)
    _, mounts = _volumes(spec, inputs)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": inputs.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": COMMAND,
        "args": trainer_args(config, set(spec.hyperparameters.model_fields_set)),
        "env": _env(spec, inputs),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # The result JSON is the termination message; a crash before it is written
        # leaves the log's tail there instead, which the status then quotes.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_container(),
    }
    if spec.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.credentials_secret}}]
    return container


def render_training_job(
    owner: TrainingOwner, spec: FluxLoRATrainingSpec, inputs: TrainingInputs
) -> dict[str, Any]:
    """The batch/v1 Job of one run."""
    volumes, _ = _volumes(spec, inputs)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": restricted_pod(),
        "containers": [trainer_container(owner, spec, inputs)],
        "volumes": volumes,
    }
    place(pod_spec, spec.gpu, spec.image_pull_secrets)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": NOT_RETRIABLE_EXIT_CODES,
                    },
                },
                # A pod evicted or preempted is not the run's fault: not counted.
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        },
        "template": {
            "metadata": {"labels": training_metadata(owner, "")["labels"]},
            "spec": pod_spec,
        },
    }
    return _run(owner, spec, "Job", job_spec)


def render_train_job(
    owner: TrainingOwner, spec: FluxLoRATrainingSpec, inputs: TrainingInputs
) -> dict[str, Any]:
    """The Kubeflow Trainer TrainJob of one run (engine kubeflow): the same image, command
    and resources on one node of ``spec.kubeflowRuntime``, whose template places the pod
    (the runtime is the cluster's, so are its tolerations and volumes)."""
    container = trainer_container(owner, spec, inputs)
    trainer: dict[str, Any] = {
        "image": container["image"],
        "command": container["command"],
        "args": container["args"],
        "env": container["env"],
        "numNodes": 1,
        "resourcesPerNode": container["resources"],
    }
    train_spec: dict[str, Any] = {
        "runtimeRef": {
            "name": spec.kubeflow_runtime,
            "apiGroup": "trainer.kubeflow.org",
            "kind": "ClusterTrainingRuntime",
        },
        "trainer": trainer,
    }
    return _run(owner, spec, "TrainJob", train_spec)


def _run(
    owner: TrainingOwner, spec: FluxLoRATrainingSpec, kind: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The ``kind`` object that runs the training, named for the run, with its deadline."""
    if spec.active_deadline_seconds is not None:
        body["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": _API_VERSIONS[kind],
        "kind": kind,
        "metadata": training_metadata(owner, job_name(owner.name)),
        "spec": body,
    }


def render_training(
    owner: TrainingOwner, spec: FluxLoRATrainingSpec, inputs: TrainingInputs
) -> dict[str, Any]:
    """The object that runs the training, per ``spec.engine``."""
    if spec.engine == "kubeflow":
        return render_train_job(owner, spec, inputs)
    return render_training_job(owner, spec, inputs)

"""A FluxLoRATraining → the batch/v1 Job that runs ``python -m flux_trainer train``.

Pure, like the rest of ``render``: what the spec leaves to a FluxDeployment (the model,
the image) arrives resolved in ``TrainingInputs`` (``training_inputs``). The pod follows
the server pod's conventions (GPU limit, the GPU taint's toleration, the nodeSelector,
restricted Pod security) and ends with the trainer's result JSON in
``/dev/termination-log``, which the kubelet copies into the Pod's status: the operator
reads it there, so the trainer needs no API access (no service account token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from flux_operator.render.naming import MANAGER, MODEL_DIR, Owner, image_ref, object_metadata
from flux_operator.spec import GROUP, FluxDeploymentSpec
from flux_operator.spec.training import TRAINING_KIND, FluxLoRATrainingSpec
from flux_trainer.config import TrainConfig, flag

TRAINING_LABEL = f"{GROUP}/fluxloratraining"
TRAINER_APP = "fluxserve-trainer"
TERMINATION_LOG = "/dev/termination-log"
DATASET_DIR = "/dataset"
OUTPUT_DIR = "/output"
ADAPTER_FILE = "pytorch_lora_weights.safetensors"
NOT_RETRIABLE_EXIT_CODES = [2, 3, 4, 5]
"""The trainer's exit codes for bad flags, a bad data set, a missing package or device,
and a checkpoint that does not fit: a retry would fail the same way (flux_trainer.cli)."""


@dataclass(frozen=True)
class TrainingOwner(Owner):
    """The FluxLoRATraining the run's objects belong to: an ``Owner`` by the name that says
    which resource owns them."""

    kind: ClassVar[str] = TRAINING_KIND


@dataclass(frozen=True)
class TrainingInputs:
    """What the spec names indirectly, resolved: the base model and the image."""

    base: str
    revision: str | None
    image: str
    model_pvc: tuple[str, str | None] | None = None  # (claim, subPath) mounted at MODEL_DIR


def training_inputs(
    spec: FluxLoRATrainingSpec, deployment: FluxDeploymentSpec | None
) -> TrainingInputs:
    """The base model and image from the spec, or from the FluxDeployment it names
    (ValueError when it names one and none is given)."""
    own_image = f"{spec.image}:{spec.release}" if spec.release else None
    if "@" in spec.image or ":" in spec.image.rsplit("/", 1)[-1]:
        own_image = spec.image
    if spec.base_model is not None:
        if own_image is None:
            raise ValueError("release is required without fluxDeploymentRef")
        return TrainingInputs(spec.base_model, spec.base_revision, own_image)
    if deployment is None:
        raise ValueError(f"FluxDeployment {spec.flux_deployment_ref} not found")
    pvc = deployment.model.source.pvc
    return TrainingInputs(
        base=MODEL_DIR if pvc is not None else deployment.model.id,
        revision=spec.base_revision or deployment.model.revision,
        image=own_image or image_ref(deployment),
        model_pvc=(pvc.claim_name, pvc.sub_path) if pvc is not None else None,
    )


def job_name(name: str) -> str:
    return f"{name}-train"


def training_labels(owner: TrainingOwner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": TRAINER_APP,
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "lora-training",
        "app.kubernetes.io/part-of": "fluxserve",
        "app.kubernetes.io/managed-by": MANAGER,
        TRAINING_LABEL: owner.name,
    }


def training_metadata(owner: TrainingOwner, name: str) -> dict[str, Any]:
    return object_metadata(owner, name, training_labels(owner))


def dataset_argument(spec: FluxLoRATrainingSpec) -> str:
    data = spec.dataset
    if data.s3 is not None:
        return data.s3
    if data.git is not None:
        sub = f"#subdirectory={data.git.subdirectory}" if data.git.subdirectory else ""
        return f"git+{data.git.url}@{data.git.revision}{sub}"
    return DATASET_DIR


def output_directory(spec: FluxLoRATrainingSpec) -> str:
    pvc = spec.output.pvc
    return f"{OUTPUT_DIR}/{pvc.path}" if pvc is not None else OUTPUT_DIR


def upload_prefix(owner: TrainingOwner, spec: FluxLoRATrainingSpec) -> str | None:
    if spec.output.s3 is None:
        return None
    return f"{spec.output.s3.rstrip('/')}/{owner.namespace or 'default'}/{owner.name}"


def trainer_config(
    owner: TrainingOwner, spec: FluxLoRATrainingSpec, inputs: TrainingInputs
) -> TrainConfig:
    """The run as the trainer will read it: the trainer's own model checks it (ValueError
    naming the field, before any Job exists)."""
    return TrainConfig(
        base=inputs.base,
        revision=inputs.revision,
        dataset=dataset_argument(spec),
        output=output_directory(spec),
        device="cuda" if spec.gpu.count > 0 else "cpu",
        resume=True,  # a retried pod continues from its last checkpoint where it can
        upload=upload_prefix(owner, spec),
        **spec.hyperparameters.model_dump(),
    )


_ALWAYS = ("base", "revision", "dataset", "output", "device", "resume", "upload", "steps")


def trainer_args(config: TrainConfig, chosen: set[str]) -> list[str]:
    """``train`` and its flags: where things are, the steps, and each hyperparameter the
    spec sets (the others are the trainer's defaults, which the CRD documents)."""
    args = ["train"]
    for name in TrainConfig.model_fields:
        value = getattr(config, name)
        if (name not in _ALWAYS and name not in chosen) or value is None:
            continue
        if isinstance(value, bool):
            args.append(flag(name) if value else "--no-" + flag(name)[2:])
        elif isinstance(value, list):
            args += [flag(name), *(str(v) for v in value)]
        else:
            args.append(f"{flag(name)}={value}")
    return [*args, f"--result-file={TERMINATION_LOG}"]

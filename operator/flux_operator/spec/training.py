"""The FluxLoRATraining resource: a LoRA fine-tuning run of a FLUX model, as a Job.

The hyperparameters are the trainer's own settings (``flux_trainer.config.TrainConfig``,
pure pydantic): the same names (camelCase here, ``--kebab-case`` on the trainer's command
line), bounds, defaults and descriptions, so the CRD cannot drift from the flags the Job
runs. What the resource says in its own words instead is where things are: the base model
(or a FluxDeployment to take it from), the dataset, the output, GPUs and promotion.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, create_model, model_validator
from pydantic.fields import FieldInfo

from flux_operator.spec.base import (
    RELEASE_PATTERN,
    DnsLabel,
    ImagePullPolicy,
    ImagePullSecrets,
    ImageRepository,
    K8sName,
    LoraName,
    ModelId,
    RelativePath,
    _cel,
    _Model,
)
from flux_operator.spec.serving import GpuSpec, ResourcesSpec
from flux_operator.spec.sources import PvcSource
from flux_trainer.config import RESOLUTION_MULTIPLE, TrainConfig

TRAINING_KIND = "FluxLoRATraining"
TRAINING_PLURAL = "fluxloratrainings"
TRAINING_SINGULAR = "fluxloratraining"
TRAINING_SHORT_NAMES = ("fxlt",)
TRAINING_MAX_NAME_LENGTH = 52
"""The Job is named ``<name>-train`` and its pods add ``-<5 chars>``: 52 keeps 63."""

OWN_FIELDS = frozenset({"base", "revision", "dataset", "output", "device", "resume", "upload"})
"""TrainConfig fields the resource states in its own words (where things are, which
device): every other field is a hyperparameter, one to one."""

_GIT_URL = r"^(https://|ssh://|git@)[^\s]+$"
_S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,62}(/[^\s]*)?$"
S3Uri = Annotated[str, StringConstraints(max_length=1024, pattern=_S3_URI)]
"""An object-store location: s3://bucket, then a key or a prefix."""


def _hyperparameter_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in TrainConfig.model_fields.items():
        if name in OWN_FIELDS:
            continue
        field = copy.copy(info)
        if name == "resolution":
            # TrainConfig checks it in a validator; the API server needs it in the schema.
            field = FieldInfo.merge_field_infos(field, Field(multiple_of=RESOLUTION_MULTIPLE))
        fields[name] = (info.annotation, field)
    return fields


if TYPE_CHECKING:  # a model made at import: its fields are TrainConfig's
    Hyperparameters = _Model
else:
    Hyperparameters = create_model(
        "Hyperparameters",
        __base__=_Model,
        __doc__="The trainer's settings (python -m flux_trainer train --help), camelCase.",
        **_hyperparameter_fields(),
    )


class GitDataset(_Model):
    """A git repository at a pinned revision."""

    url: str = Field(max_length=1024, pattern=_GIT_URL, description="Repository URL.")
    revision: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$",
        description="Commit, tag or branch (a commit pins the data set).",
    )
    subdirectory: RelativePath | None = Field(
        default=None,
        description="Folder inside the repository that holds metadata.jsonl.",
    )


_ONE_OF = "(has(self.{a}) ? 1 : 0) + (has(self.{b}) ? 1 : 0)"


class DatasetSpec(_Model):
    """An imagefolder data set (images + metadata.jsonl); exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                _ONE_OF.format(a="pvc", b="s3") + " + (has(self.git) ? 1 : 0) == 1",
                "set exactly one of pvc, s3 or git",
            )
        )
    )

    pvc: PvcSource | None = Field(
        default=None, description="A PVC holding the folder or archive (mounted read-only)."
    )
    s3: S3Uri | None = Field(default=None, description="s3://bucket/key of the folder or archive.")
    git: GitDataset | None = Field(default=None, description="A git repository at a revision.")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if sum(x is not None for x in (self.pvc, self.s3, self.git)) != 1:
            raise ValueError("set exactly one of pvc, s3 or git")
        return self


class OutputPvc(_Model):
    """A PVC the adapter is written to."""

    claim_name: K8sName = Field(description="PVC name.")
    path: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^/]([^.]|\.[^.])*$",
        description="Folder inside the claim (no '..').",
    )


class OutputSpec(_Model):
    """Where the adapter goes; exactly one of s3 or pvc."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (_ONE_OF.format(a="s3", b="pvc") + " == 1", "set exactly one of s3 or pvc")
        )
    )

    s3: S3Uri | None = Field(
        default=None,
        description="An s3:// prefix: the run uploads under <prefix>/<namespace>/<name>/.",
    )
    pvc: OutputPvc | None = Field(default=None, description="A PVC and a folder in it.")

    @model_validator(mode="after")
    def _one_target(self) -> OutputSpec:
        if (self.s3 is None) == (self.pvc is None):
            raise ValueError("set exactly one of s3 or pvc")
        return self


class EvaluationSpec(_Model):
    """What a run must show before its adapter is promoted."""

    min_improvement_percent: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="The final validation loss must be below the base model's by at least "
        "this many percent (0: any improvement).",
    )


class FluxLoRATrainingSpec(_Model):
    """One LoRA training run, its evaluation and (optionally) its promotion."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "(has(self.baseModel) ? 1 : 0) + (has(self.fluxDeploymentRef) ? 1 : 0) == 1",
                "set exactly one of baseModel or fluxDeploymentRef",
            ),
            (
                "has(self.release) || has(self.fluxDeploymentRef)",
                "release is required without fluxDeploymentRef (it names the image)",
            ),
            (
                "!has(self.promotion) || self.promotion == 'none' || has(self.target)",
                "promotion canary needs target (a FluxDeployment name)",
            ),
            (
                "!has(self.engine) || self.engine == 'job' || "
                "(!has(self.dataset.pvc) && !has(self.output.pvc))",
                "engine kubeflow needs dataset s3 or git and output s3",
            ),
        )
    )

    base_model: ModelId | None = Field(
        default=None,
        description="The FLUX pipeline to adapt: a hub id (black-forest-labs/FLUX.1-dev).",
    )
    base_revision: str | None = Field(
        default=None, max_length=255, description="Revision (commit or tag) of baseModel."
    )
    flux_deployment_ref: DnsLabel | None = Field(
        default=None,
        description="A FluxDeployment in this namespace whose model (and, without release, "
        "image) the run uses.",
    )
    release: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=RELEASE_PATTERN,
        description="Release (image tag) of the image with the train extra; default: the "
        "referenced FluxDeployment's image.",
    )
    image: ImageRepository = Field(
        default="ghcr.io/fluxserve/fluxserve-server",
        description="Image repository (it must have the train extra installed); a tag or "
        "digest written here overrides release.",
    )
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    image_pull_secrets: ImagePullSecrets = Field(default_factory=list)
    credentials_secret: K8sName | None = Field(
        default=None,
        description="A Secret whose keys become the trainer's environment (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, HF_TOKEN...).",
    )
    dataset: DatasetSpec = Field(description="The annotated images.")
    hyperparameters: Hyperparameters = Field(
        default_factory=lambda: Hyperparameters(), description="The trainer's settings."
    )
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPUs of the training pod.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and shared memory."
    )
    backoff_limit: int = Field(
        default=1, ge=0, le=10, description="Retries of a failed pod (it resumes)."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=60, le=2592000, description="Longest a run may take."
    )
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="What the run must show."
    )
    output: OutputSpec = Field(description="Where the adapter goes.")
    promotion: Literal["none", "canary"] = Field(
        default="none",
        description="canary: when the evaluation passes, add the adapter to target's loras "
        "(its rollout strategy ships it).",
    )
    target: DnsLabel | None = Field(default=None, description="The FluxDeployment.")
    lora_name: LoraName | None = Field(
        default=None,
        description="The adapter's name in target's loras (default: this resource's name).",
    )
    engine: Literal["job", "kubeflow"] = Field(
        default="job",
        description="job: a batch/v1 Job; kubeflow: a Kubeflow Trainer TrainJob "
        "(trainer.kubeflow.org/v1alpha1), where the cluster has it.",
    )
    kubeflow_runtime: K8sName = Field(
        default="torch-distributed",
        description="engine kubeflow: the ClusterTrainingRuntime the TrainJob runs on (its "
        "nodes, tolerations and volumes are the runtime's).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FluxLoRATrainingSpec:
        if (self.base_model is None) == (self.flux_deployment_ref is None):
            raise ValueError("set exactly one of baseModel or fluxDeploymentRef")
        if self.release is None and self.flux_deployment_ref is None:
            raise ValueError("release is required without fluxDeploymentRef")
        if self.promotion == "canary" and self.target is None:
            raise ValueError("promotion canary needs target (a FluxDeployment name)")
        if self.engine == "kubeflow" and (self.dataset.pvc or self.output.pvc):
            # A TrainJob's volumes are its runtime's: it reads and writes object storage.
            raise ValueError("engine kubeflow needs dataset s3 or git and output s3")
        return self

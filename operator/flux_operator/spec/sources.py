"""Where the weights come from: a PVC or the hub, and the secrets and ConfigMaps
referred to."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from flux_operator.spec.base import ObjectName, RelativePath, SecretName, _cel, _Model


class SecretKeyRef(_Model):
    """A key of a Secret in the FluxDeployment's namespace."""

    name: SecretName = Field(description="Secret name.")
    key: str = Field(min_length=1, max_length=253, description="Key in the Secret's data.")


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the FluxDeployment's namespace."""

    name: ObjectName = Field(description="ConfigMap name.")
    key: str = Field(min_length=1, max_length=253, description="Key in the ConfigMap's data.")


class PvcSource(_Model):
    """A PersistentVolumeClaim mounted read-only."""

    claim_name: ObjectName = Field(description="PVC name, same namespace.")
    sub_path: RelativePath | None = Field(
        default=None, description="Directory inside the volume (relative, no leading slash)."
    )


class HubSource(_Model):
    """Download from the Hugging Face hub when the pod starts."""

    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding HF_TOKEN (gated models such as FLUX.1-dev)."
    )


class ModelSource(_Model):
    """Where the weights come from: exactly one of ``pvc`` or ``hub``."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("has(self.pvc) != has(self.hub)", "set exactly one of model.source.pvc or .hub")
        )
    )

    pvc: PvcSource | None = Field(
        default=None, description="Weights on a PVC (mounted at /models)."
    )
    hub: HubSource | None = Field(default=None, description="Weights fetched from the hub.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.pvc is None) == (self.hub is None):
            raise ValueError("set exactly one of model.source.pvc or .hub")
        return self


class ModelSpec(_Model):
    """The diffusers model the server loads."""

    id: str = Field(
        min_length=1,
        max_length=256,
        description="Hub id (e.g. black-forest-labs/FLUX.1-dev); names the model in responses "
        "and metrics. With a PVC source the server loads the PVC directory instead.",
    )
    revision: str | None = Field(
        default=None, max_length=128, description="Hub revision (branch, tag or commit); hub only."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Weights dtype (--dtype)."
    )
    source: ModelSource = Field(description="Where the weights come from.")

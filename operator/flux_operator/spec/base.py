"""Names, patterns and the base model every part of the FluxDeployment spec shares."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from flux_contract.names import MAX_NAME_LENGTH as MAX_PRESET_NAME_LENGTH

GROUP = "fluxserve.dev"
VERSION = "v1alpha1"
KIND = "FluxDeployment"
PLURAL = "fluxdeployments"
SINGULAR = "fluxdeployment"
SHORT_NAMES = ("fxd",)

RELEASE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
"""A git tag that is also a valid OCI image tag (the image tag is the release)."""

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LORA_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=K8S_NAME)]
"""The name of an object in the namespace (a DNS subdomain)."""
SecretName = ObjectName
"""A Secret's name."""
K8sName = Annotated[str, StringConstraints(max_length=253, pattern=K8S_NAME)]
"""A DNS subdomain, as ``ObjectName`` but with no ``minLength`` in the schema (the pattern
needs a character all the same)."""
DnsLabel = Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL)]
"""A namespace's or a FluxDeployment's name (an RFC 1035 label: it starts with a letter)."""
LoraName = Annotated[str, StringConstraints(max_length=63, pattern=LORA_NAME)]
"""A LoRA adapter's name, as requests and presets use it. maxLength although the pattern
bounds it too: the API server prices CEL rules (the uniqueness rule compares every pair of
names) from maxLength, not from patterns."""
ModelId = Annotated[str, StringConstraints(max_length=1024)]
"""A model's path (on a volume) or hub id."""
RelativePath = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^/].*$")]
"""A path inside a volume or repository: relative, no leading slash."""

IMAGE_PATTERN = (
    r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"
)
ImageRepository = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=IMAGE_PATTERN)
]
"""An image repository, with an optional tag or digest."""
ImagePullPolicy = Annotated[
    Literal["Always", "IfNotPresent", "Never"], Field(description="Image pull policy.")
]
ImagePullSecrets = Annotated[
    list[SecretName], Field(max_length=16, description="Secrets for pulling the image.")
]

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
"""A share, 0 to 1."""

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
"""A Go/CEL duration without fractions (``30s``, ``10m``, ``1h30m``): the form CEL's
``duration()`` and PromQL's range selectors both read."""

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]


def parse_duration(text: str) -> float:
    """Seconds in a duration matching :data:`DURATION_PATTERN` (``ValueError`` otherwise)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m or 1h30m")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


MAX_NAME_LENGTH = 40
"""Children are named ``<name>-presets-<10 hex>``; 40 keeps them inside 63 characters."""


# Any Unicode name users type (水墨): the CRD's CEL rule on the keys refuses what a
# pattern can say; flux_contract.names decides the rest (the operator reports it).
PresetName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PRESET_NAME_LENGTH)]


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _StatusModel(_Model):
    # Read back leniently: other writers (kopf's own bookkeeping) may add keys to status.
    model_config = ConfigDict(extra="ignore")

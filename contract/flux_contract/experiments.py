"""Experiments on style presets: the one format shared by the operator (writer) and the
server (reader), beside the presets in the same ConfigMap.

An experiment takes the requests for one preset and serves each subject one of its arms
(each arm names a preset) by weight. The operator writes every experiment into the
presets ConfigMap as one file, ``_experiments.json`` (``{"experiments": [...]}``, camelCase);
a key starting with ``_`` is never a preset's (see ``flux_contract.names``).
``ExperimentArm`` is what a response says of the arm that served it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from flux_contract.names import MAX_NAME_LENGTH, check_name, normalize

__all__ = [
    "EXPERIMENTS_FILE",
    "HEADER_NAME_PATTERN",
    "MAX_ARMS",
    "MAX_EXPERIMENTS",
    "TOTAL_WEIGHT",
    "Arm",
    "Audience",
    "Experiment",
    "ExperimentArm",
    "ExperimentsFile",
    "experiment_problems",
    "experiments_from_file",
    "experiments_to_file",
    "validation_problems",
]

EXPERIMENTS_FILE = "_experiments.json"
TOTAL_WEIGHT = 100
MAX_ARMS = 10
MAX_EXPERIMENTS = 50
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"
"""An HTTP field name (RFC 9110 token)."""


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(check_name)
]
"""A preset, experiment or arm name (``flux_contract.names.check_name``)."""


class Audience(BaseModel):
    """Only requests whose ``header`` has one of ``values`` take part."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    header: str = Field(
        pattern=HEADER_NAME_PATTERN,
        description="Request header naming the caller's group, e.g. X-Customer-Group.",
    )
    values: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        min_length=1,
        max_length=100,
        description="Groups that take part (exact, case-sensitive match).",
    )

    @field_validator("values")
    @classmethod
    def _printable(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value or len(value) > 256 or not value.isprintable():
                raise ValueError(f"{value!r}: 1 to 256 printable characters")
        return values


class Arm(BaseModel):
    """One variant: the preset its subjects get, and its share of the subjects."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: Name = Field(description="Arm name, reported in metrics and the response header.")
    preset: Name = Field(description="The style preset this arm serves.")
    weight: int = Field(ge=0, le=TOTAL_WEIGHT, description="Percent of subjects (0-100).")


class Experiment(BaseModel):
    """Requests for ``preset`` (from the ``audience``, when given) are split into ``arms``;
    the first arm is the control the others are compared with."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: Name = Field(description="Experiment name, unique in the deployment.")
    preset: Name = Field(description="Requests for this style preset take part.")
    audience: Audience | None = Field(
        default=None, description="Only these callers take part; everyone when omitted."
    )
    arms: list[Arm] = Field(
        min_length=2, max_length=MAX_ARMS, description="The variants; the first is the control."
    )
    salt: str = Field(
        default="",
        max_length=64,
        description="Mixed into the assignment hash; changing it reshuffles the subjects.",
    )

    @model_validator(mode="after")
    def _arms_consistent(self) -> Experiment:
        seen: set[str] = set()
        for arm in self.arms:
            if normalize(arm.name) in seen:
                raise ValueError(f"arms: duplicate arm name {arm.name!r}")
            seen.add(normalize(arm.name))
        total = sum(arm.weight for arm in self.arms)
        if total != TOTAL_WEIGHT:
            weights = ", ".join(f"{arm.name}={arm.weight}" for arm in self.arms)
            raise ValueError(f"arms: weights must sum to {TOTAL_WEIGHT}, got {total} ({weights})")
        return self

    def arm(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)


class ExperimentArm(BaseModel):
    """The experiment arm that served a request (``X-Fluxserve-Experiment``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The experiment."""
    arm: str
    preset: str = ""
    """The arm's style preset, which replaced the requested one."""


class ExperimentsFile(BaseModel):
    """The content of ``_experiments.json``."""

    model_config = ConfigDict(extra="forbid")

    experiments: list[Experiment] = Field(default_factory=list, max_length=MAX_EXPERIMENTS)


def experiment_problems(experiments: Sequence[Experiment], presets: Collection[str]) -> list[str]:
    """What the single experiments cannot see: presets that do not exist, names used twice.
    Each problem is ``field: message``, the field written as in the ConfigMap file."""
    problems: list[str] = []
    known = {normalize(name) for name in presets}
    names: dict[str, int] = {}
    on_preset: dict[str, int] = {}
    for i, experiment in enumerate(experiments):
        at = f"experiments[{i}]"
        name = normalize(experiment.name)
        if name in names:
            problems.append(
                f"{at}.name: {experiment.name!r} is also experiments[{names[name]}]'s name"
            )
        names.setdefault(name, i)
        preset = normalize(experiment.preset)
        if preset not in known:
            problems.append(f"{at}.preset: no style preset named {experiment.preset!r}")
        elif preset in on_preset:
            problems.append(
                f"{at}.preset: experiments[{on_preset[preset]}] already runs on "
                f"{experiment.preset!r}; one experiment per preset"
            )
        on_preset.setdefault(preset, i)
        for j, arm in enumerate(experiment.arms):
            if normalize(arm.preset) not in known:
                problems.append(f"{at}.arms[{j}].preset: no style preset named {arm.preset!r}")
    return problems


def experiments_to_file(experiments: Sequence[Experiment]) -> str:
    """The content of ``_experiments.json``, stable for the ConfigMap's content hash."""
    body = ExperimentsFile(experiments=list(experiments))
    data = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def experiments_from_file(content: str, presets: Collection[str]) -> list[Experiment]:
    """Parse and check ``_experiments.json`` against the presets beside it. ValueError
    lists every problem, each naming its field."""
    try:
        parsed = ExperimentsFile.model_validate_json(content)
    except ValidationError as exc:
        raise ValueError(f"{EXPERIMENTS_FILE}: {'; '.join(validation_problems(exc))}") from None
    problems = experiment_problems(parsed.experiments, presets)
    if problems:
        raise ValueError(f"{EXPERIMENTS_FILE}: {'; '.join(problems)}")
    return parsed.experiments


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """pydantic's errors as ``field: message`` lines (``experiments[0].arms[1].weight``)."""
    problems = []
    for error in exc.errors():
        path = prefix
        for item in error["loc"]:
            if isinstance(item, int):
                path += f"[{item}]"
            else:
                path += f".{item}" if path else str(item)
        message = re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
        inner = re.match(r"^(\w+): (.*)$", message, re.S)  # a model check naming its field
        if inner and path:
            path, message = f"{path}.{inner[1]}", inner[2]
        problems.append(f"{path or 'body'}: {message}")
    return problems

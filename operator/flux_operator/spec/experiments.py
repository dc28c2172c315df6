"""A/B experiments on style presets: ``spec.experiments``.

These models are the CRD's view of the experiment format (``flux_contract.experiments``,
the one format the server reads): the same fields and bounds, plus what a schema can
enforce at the API server — name alphabet, weights 0 to 100, two or more arms, unique arm
and experiment names (CEL). What needs the whole spec (arms naming known presets, weights
summing to 100, one experiment per preset) or a Unicode table (the letter classes and NFC
form of a name) is checked by the operator against the client model, and a resource that
fails it is ``Degraded`` with the field named (``flux_operator.validation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from flux_contract.experiments import (
    HEADER_NAME_PATTERN,
    MAX_ARMS,
    TOTAL_WEIGHT,
    Experiment,
    experiment_problems,
    validation_problems,
)
from flux_contract.names import MAX_NAME_LENGTH, name_problem
from flux_operator.spec.base import _cel, _Model

NAME_PATTERN = r"^([-._A-Za-z0-9]|[^\x00-\x7F])+$"
"""The part of ``flux_contract.names.name_problem`` a regular expression in both RE2 (the
API server) and Python can say: ASCII letters, digits, ``-``, ``_``, ``.``, or any
non-ASCII character. Non-ASCII spaces, symbols and non-NFC spellings are refused by the
operator with the reason."""

NAME_RULE_MESSAGE = (
    "letters and digits of any script, '-', '_' and '.' (no spaces, '/' or other ASCII "
    "punctuation: a name is a file name and a header value)"
)

_Name = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
]
_GroupValue = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class AudienceSpec(_Model):
    """Only requests whose ``header`` has one of ``values`` take part."""

    header: str = Field(
        min_length=1,
        max_length=64,
        pattern=HEADER_NAME_PATTERN,
        description="Request header naming the caller's group, e.g. X-Customer-Group.",
    )
    values: list[_GroupValue] = Field(
        min_length=1,
        max_length=100,
        description="Groups that take part (exact, case-sensitive match).",
    )


class ArmSpec(_Model):
    """One variant: the style preset its subjects get, and its share of them."""

    name: _Name = Field(description="Arm name, reported in metrics and the response header.")
    preset: _Name = Field(description="The style preset (a key of stylePresets) this arm serves.")
    weight: int = Field(
        ge=0,
        le=TOTAL_WEIGHT,
        description=f"Percent of subjects; an experiment's weights sum to {TOTAL_WEIGHT}.",
    )


class ExperimentSpec(_Model):
    """Requests for a preset split between arms, each user kept in one; arm 1 is control."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.arms.all(a, self.arms.exists_one(b, b.name == a.name))",
                "arm names must be unique in an experiment",
            )
        )
    )

    name: _Name = Field(description="Experiment name, unique in the deployment.")
    preset: _Name = Field(
        description="Requests for this style preset (a key of stylePresets) take part."
    )
    audience: AudienceSpec | None = Field(
        default=None, description="Only these callers take part; everyone when omitted."
    )
    arms: list[ArmSpec] = Field(
        min_length=2,
        max_length=MAX_ARMS,
        description=f"The variants; the first is the control. Weights sum to {TOTAL_WEIGHT}.",
    )
    salt: str = Field(
        default="",
        max_length=64,
        description="Mixed into the assignment hash; changing it reshuffles the users.",
    )


EXPERIMENTS_RULES: tuple[tuple[str, str], ...] = (
    (
        "!has(self.experiments) || self.experiments.all(e, "
        "self.experiments.exists_one(f, f.name == e.name))",
        "experiment names must be unique",
    ),
)
"""CEL rules on the spec as a whole (``FluxDeploymentSpec`` adds them)."""


def experiments_as_written(experiments: list[ExperimentSpec]) -> list[dict[str, Any]] | None:
    """``spec.experiments`` in its camelCase form, for :func:`parse_experiments`
    (None when there are none, so a spec without experiments renders as before)."""
    if not experiments:
        return None
    return [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in experiments]


_EXPERIMENTS = TypeAdapter(list[Experiment])


def preset_name_problems(names: Sequence[str]) -> list[str]:
    """``spec.stylePresets[<name>]: reason`` for each name that cannot be a preset's."""
    problems = []
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            problems.append(f"spec.stylePresets[{name!r}]: {problem}")
    return problems


def parse_experiments(raw: Any, presets: Sequence[str]) -> tuple[list[Experiment], list[str]]:
    """``spec.experiments`` as written, checked against the resource's presets with the
    server's own model: the experiments (empty when any is invalid) and the problems, each
    naming its field."""
    if raw is None:
        return [], []
    try:
        experiments = _EXPERIMENTS.validate_python(raw)
    except ValidationError as exc:
        return [], validation_problems(exc, prefix="spec.experiments")
    problems = [f"spec.{p}" for p in experiment_problems(experiments, presets)]
    return (experiments if not problems else []), problems

"""The operator's side of style-preset experiments, pure: check a resource's presets and
experiments (problems naming the field as the user wrote it, for the ``Degraded``
condition), and render both into the presets ConfigMap's ``data``. The ConfigMap is
content-hashed per revision, so a change of weights is a new revision and a rollback
restores the experiments with the presets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from flux_client.experiments import (
    EXPERIMENTS_FILE,
    Experiment,
    experiment_problems,
    experiments_to_file,
    validation_problems,
)
from flux_client.names import name_problem
from flux_client.presets import StylePreset, presets_to_files

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
    """``spec.experiments`` as written, checked against the resource's presets: the
    experiments (empty when any is invalid) and the problems, each naming its field."""
    if raw is None:
        return [], []
    try:
        experiments = _EXPERIMENTS.validate_python(raw)
    except ValidationError as exc:
        return [], validation_problems(exc, prefix="spec.experiments")
    problems = [f"spec.{p}" for p in experiment_problems(experiments, presets)]
    return (experiments if not problems else []), problems


def presets_configmap_data(
    presets: Mapping[str, StylePreset], experiments: Sequence[Experiment]
) -> dict[str, str]:
    """The presets ConfigMap's ``data``: a file per preset under its encoded key, and
    ``_experiments.json`` when experiments run (absent otherwise, so a deployment
    without experiments keeps its ConfigMap and its hash as before)."""
    data = presets_to_files(presets)
    if experiments:
        data[EXPERIMENTS_FILE] = experiments_to_file(experiments)
    return data

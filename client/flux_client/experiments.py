"""The experiment format: ``flux_contract.experiments``, re-exported for SDK users."""

from __future__ import annotations

from flux_contract.experiments import (
    EXPERIMENTS_FILE,
    HEADER_NAME_PATTERN,
    MAX_ARMS,
    MAX_EXPERIMENTS,
    TOTAL_WEIGHT,
    Arm,
    Audience,
    Experiment,
    ExperimentArm,
    ExperimentsFile,
    experiment_problems,
    experiments_from_file,
    experiments_to_file,
    validation_problems,
)

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

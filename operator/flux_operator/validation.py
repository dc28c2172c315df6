"""What the operator checks before it acts: the CRD's rules again (a resource may predate
the installed CRD, or the CRD may not be installed with its CEL rules), plus what only the
operator knows it cannot serve. Problems become a ``Degraded`` condition and an Event.
"""

from __future__ import annotations

import re
from typing import Any

import promql_parser
from pydantic import ValidationError

from flux_operator.spec import (
    DNS_LABEL,
    MAX_NAME_LENGTH,
    FluxDeploymentSpec,
    experiments_as_written,
    parse_experiments,
    preset_name_problems,
)


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = ["spec"]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def spec_problems(resource: dict[str, Any]) -> list[str]:
    """Human-readable problems (``field: message``), empty when the operator can serve it."""
    problems: list[str] = []
    name = str(resource.get("metadata", {}).get("name", ""))
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"metadata.name: at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if name and not re.match(DNS_LABEL, name):
        problems.append("metadata.name: must be a DNS label (it names a Service)")
    try:
        spec = FluxDeploymentSpec.model_validate(resource.get("spec") or {})
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(f"{_field_path(error['loc'])}: {error['msg']}")
        return problems
    return problems + serving_problems(spec)


def serving_problems(spec: FluxDeploymentSpec) -> list[str]:
    """Specs the API server accepts but no pod could run."""
    problems: list[str] = []
    if spec.model.source.pvc is None:
        for i, lora in enumerate(spec.loras):
            if lora.path is not None:
                problems.append(
                    f"spec.loras[{i}].path: a path under the model volume needs "
                    "spec.model.source.pvc (the hub source has no volume)"
                )
    # Preset names and experiments the CRD's schema cannot judge: a Unicode table (which
    # characters are letters, NFC), or the spec as a whole (arms naming known presets,
    # weights summing to 100, one experiment per preset).
    problems += preset_name_problems(list(spec.style_presets))
    presets = list(spec.style_presets)
    problems += parse_experiments(experiments_as_written(spec.experiments), presets)[1]
    if spec.model.revision is not None and spec.model.source.pvc is not None:
        problems.append("spec.model.revision: only applies to spec.model.source.hub")
    for name, preset in spec.style_presets.items():
        if preset.lora is not None and preset.lora.name not in {lora.name for lora in spec.loras}:
            problems.append(
                f"spec.stylePresets.{name}.lora.name: {preset.lora.name!r} is not in spec.loras"
            )
    return problems


def _query_problem(query: str) -> str | None:
    filled = query
    for placeholder, sample in (
        ("{{release}}", "v1"),
        ("{{namespace}}", "ns"),
        ("{{name}}", "name"),
        ("{{interval}}", "1m"),
    ):
        filled = filled.replace(placeholder, sample)
    try:
        promql_parser.parse(filled)
    except Exception as exc:  # the parser raises ValueError or its own error types
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def validate_canary(spec: FluxDeploymentSpec) -> list[str]:
    """Problems (``field: message``) of a spec the CRD accepted but no canary can run.

    Empty for ``strategy: RollingUpdate``. Each names the field, as ``spec_problems`` does.
    """
    rollout = spec.rollout
    canary = rollout.canary
    if rollout.strategy != "Canary" or canary is None:
        return []
    problems: list[str] = []
    previous = 0
    for i, step in enumerate(canary.steps):
        if step.weight < previous:
            problems.append(
                f"spec.rollout.canary.steps[{i}].weight: {step.weight} is below the previous "
                f"step's {previous}; weights must rise"
            )
        previous = max(previous, step.weight)
    if canary.analysis is not None:
        for i, metric in enumerate(canary.analysis.metrics):
            if metric.query is not None:
                problem = _query_problem(metric.query)
                if problem is not None:
                    problems.append(
                        f"spec.rollout.canary.analysis.metrics[{i}].query: not PromQL: {problem}"
                    )
    if spec.autoscaling is None and spec.replicas == 0:
        problems.append("spec.replicas: strategy Canary needs replicas > 0 (or autoscaling)")
    elif canary.max_surge == 0:
        pods = spec.replicas if spec.autoscaling is None else spec.autoscaling.min_replicas
        field = "spec.replicas" if spec.autoscaling is None else "spec.autoscaling.minReplicas"
        if pods < 2:
            problems.append(
                f"spec.rollout.canary.maxSurge: 0 carves the canary out of the current pods, "
                f"which needs {field} >= 2 (one stable pod stays); got {pods}"
            )
    return problems

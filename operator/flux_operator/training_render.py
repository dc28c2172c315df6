"""``python -m flux_operator render FILE`` for FluxLoRATrainings: each becomes its Job
(or TrainJob). A ``fluxDeploymentRef`` is resolved against the FluxDeployments of the
same file (there is no cluster to ask)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flux_operator.render.training import TrainingOwner, training_inputs
from flux_operator.render.training_job import render_training
from flux_operator.spec import KIND, FluxDeploymentSpec
from flux_operator.spec.training import TRAINING_KIND, FluxLoRATrainingSpec


def validation_problems(exc: ValidationError) -> list[str]:
    """Each error as ``spec.a.b: message`` (the field, as the resource spells it)."""
    return [
        "spec." + ".".join(str(p) for p in error["loc"]) + f": {error['msg']}"
        if error["loc"]
        else error["msg"]
        for error in exc.errors(include_url=False)
    ]


def _deployments(docs: list[Any]) -> dict[str, FluxDeploymentSpec]:
    found = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            meta = doc.get("metadata")
            try:
                spec = FluxDeploymentSpec.model_validate(doc.get("spec") or {})
            except ValidationError:
                continue  # reported by the FluxDeployment's own rendering
            if isinstance(meta, dict) and isinstance(meta.get("name"), str):
                found[meta["name"]] = spec
    return found


def render_training_docs(docs: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The Job of every FluxLoRATraining in ``docs``, and the problems found."""
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    deployments = _deployments(docs)
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != TRAINING_KIND:
            continue
        meta = doc.get("metadata") or {}
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str):
            problems.append(f"{TRAINING_KIND} without a metadata.name (its Job is named after it)")
            continue
        try:
            spec = FluxLoRATrainingSpec.model_validate(doc.get("spec") or {})
            ref = spec.flux_deployment_ref
            inputs = training_inputs(spec, deployments.get(ref) if ref else None)
            owner = TrainingOwner(name=name, namespace=meta.get("namespace"))
            objects.append(render_training(owner, spec, inputs))
        except ValidationError as exc:
            problems += [f"{name}: {p}" for p in validation_problems(exc)]
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    return objects, problems

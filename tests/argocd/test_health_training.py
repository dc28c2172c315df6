"""ArgoCD's health check for FluxLoRATraining, run with lupa as ArgoCD runs it; each
status fixture is first checked against the generated CRD's status schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.argocd.test_health import _script, _strict, run_health

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "fluxserve.dev_fluxloratrainings.yaml"
KEY = "resource.customizations.health.fluxserve.dev_FluxLoRATraining"


def _status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    return _strict(schema)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, ("Progressing", "Waiting for the operator")),
        (
            {"phase": "Running", "observedGeneration": 1, "progress": {"summary": "0/400"}},
            ("Progressing", "Running 0/400"),
        ),
        (
            {"phase": "Succeeded", "observedGeneration": 1, "message": "final 0.3 vs base 0.4"},
            ("Healthy", "final 0.3 vs base 0.4"),
        ),
        (
            {"phase": "Failed", "observedGeneration": 1, "message": "2.50% better; 5% needed"},
            ("Degraded", "2.50% better; 5% needed"),
        ),
        ({"phase": "Succeeded", "observedGeneration": 1}, ("Healthy", "Succeeded")),
        (
            {"phase": "Succeeded", "observedGeneration": 0},
            ("Progressing", "Waiting for the operator to see the new spec"),
        ),
    ],
)
def test_training_health(status: dict[str, Any] | None, expected: tuple[str, str]) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "poster-style", "generation": 1}, "spec": {}}
    if status is not None:
        jsonschema.validate(status, _status_schema())
        obj["status"] = status
    assert run_health(_script(KEY), obj) == expected

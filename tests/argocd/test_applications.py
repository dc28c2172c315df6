"""The ArgoCD Applications and the FluxDeployments they sync from git."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .test_health import CRD, ROOT, _strict

ARGOCD = ROOT / "deploy" / "argocd"
CHART = ROOT / "charts" / "fluxserve-operator"
FXD_FILES = sorted((ARGOCD / "fluxdeployments").glob("*.yaml"))


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _app(name: str) -> dict[str, Any]:
    (app,) = _load(ARGOCD / "apps" / f"{name}.yaml")
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    return app


def _wave(app: dict[str, Any]) -> int:
    return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


def test_operator_syncs_before_the_fluxdeployments() -> None:
    operator, deployments = _app("operator"), _app("fluxdeployments")
    assert _wave(operator) < _wave(deployments)
    assert "SkipDryRunOnMissingResource=true" in deployments["spec"]["syncPolicy"]["syncOptions"]


def test_operator_application_installs_this_chart() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    source = _app("operator")["spec"]["source"]
    assert source["chart"] == chart["name"]
    assert source["targetRevision"] == chart["version"]
    assert not source["repoURL"].startswith("oci://"), "ArgoCD wants OCI repos without a scheme"


def test_git_paths_exist() -> None:
    (root,) = _load(ARGOCD / "root-application.yaml")
    assert (ROOT / root["spec"]["source"]["path"]).is_dir()
    assert (ROOT / _app("fluxdeployments")["spec"]["source"]["path"]).is_dir()


def test_there_are_fluxdeployments_in_git() -> None:
    assert FXD_FILES


@pytest.mark.parametrize("path", FXD_FILES, ids=[p.name for p in FXD_FILES])
def test_fluxdeployments_in_git_are_valid(path: Path) -> None:
    """Each FluxDeployment ArgoCD would apply passes the CRD schema and the operator's model."""
    from flux_operator.spec import FluxDeploymentSpec

    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    for doc in _load(path):
        assert doc["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
        assert doc["kind"] == crd["spec"]["names"]["kind"]
        jsonschema.validate(doc, schema)
        FluxDeploymentSpec.model_validate(doc["spec"])


def test_argocd_cm_patch_is_a_valid_configmap() -> None:
    import kubernetes_validate

    (cm,) = _load(ARGOCD / "argocd-cm-health.yaml")
    kubernetes_validate.validate(cm, "1.33.0", strict=True)
    assert set(cm["data"]) == {
        "resource.customizations.health.fluxserve.dev_FluxDeployment",
        "resource.customizations.health.fluxserve.dev_FluxLoRATraining",
        "resource.customizations.health.argoproj.io_Application",
    }

"""Environments and their promotion (docs/PROMOTION.md): the example GitOps repository
(examples/promotion), the ApplicationSet over its environments, the Kargo objects kept
in it, and the promotion workflow used without Kargo — all naming the same things."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flux_operator.cli import main as cli_main
from flux_operator.render.kargo import GITOPS_REPO, PROMOTED_FREIGHT, STAGES

from .test_health import CRD, ROOT, _strict

EXAMPLE = ROOT / "examples" / "promotion"
ENVIRONMENTS = ROOT / "deploy" / "argocd" / "environments"
PRODUCTION = EXAMPLE / "env" / "production" / "fluxdeployment.yaml"


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("stage", STAGES)
def test_each_environment_holds_a_valid_flux_deployment_and_the_presets(stage: str) -> None:
    from flux_operator.spec import FluxDeploymentSpec

    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    (doc,) = _load(EXAMPLE / "env" / stage / "fluxdeployment.yaml")
    jsonschema.validate(doc, _strict(version["schema"]["openAPIV3Schema"]))
    FluxDeploymentSpec.model_validate(doc["spec"])
    # yaml-update only updates keys that exist: the promotion's keys are there.
    assert "release" in doc["spec"] and PROMOTED_FREIGHT in doc["metadata"]["annotations"]
    (kustomization,) = _load(EXAMPLE / "env" / stage / "kustomization.yaml")
    assert kustomization["namespace"] == f"flux-dev-{stage}"
    assert re.fullmatch(r"https://\S+//fluxserve\?ref=\S+", kustomization["components"][0])


def test_the_kargo_objects_in_git_are_the_rendered_ones() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["render", "--kargo", str(PRODUCTION)]) == 0
    committed = (EXAMPLE / "env" / "kargo" / "kargo.yaml").read_text()
    assert committed == out.getvalue(), (
        "examples/promotion/env/kargo/kargo.yaml is stale: run `make crds`"
    )


def test_the_applicationset_makes_the_applications_the_stages_sync() -> None:
    appset, kargo_app = _load(ENVIRONMENTS / "applicationset.yaml")
    assert (appset["kind"], kargo_app["kind"]) == ("ApplicationSet", "Application")
    (generator,) = appset["spec"]["generators"]
    assert [e["stage"] for e in generator["list"]["elements"]] == list(STAGES)
    (fd,) = _load(PRODUCTION)
    template = appset["spec"]["template"]
    for stage in STAGES:

        def fill(text: str, stage: str = stage) -> str:
            return text.replace("{{ .stage }}", stage)

        # The name Kargo's argocd-update step syncs, and the Stage it authorizes.
        assert fill(template["metadata"]["name"]) == f"flux-dev-{stage}"
        annotation = template["metadata"]["annotations"]["kargo.akuity.io/authorized-stage"]
        assert fill(annotation) == f"flux-dev:{stage}"
        source = template["spec"]["source"]
        assert source["repoURL"] == fd["metadata"]["annotations"][GITOPS_REPO]
        assert (EXAMPLE / fill(source["path"]) / "kustomization.yaml").is_file()
        assert fill(template["spec"]["destination"]["namespace"]) == f"flux-dev-{stage}"
    assert (EXAMPLE / kargo_app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    assert kargo_app["spec"]["destination"]["namespace"] == "flux-dev"  # the Project's


def test_the_promotion_workflow_writes_what_kargo_writes() -> None:
    workflow = yaml.safe_load((ENVIRONMENTS / "promotion-workflow.yaml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yaml").read_text())
    assert triggers["workflow_run"]["workflows"] == [release["name"]]
    assert triggers["workflow_dispatch"]["inputs"]["stage"]["options"] == list(STAGES)
    (job,) = workflow["jobs"].values()
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    for written in (".spec.release", f'["{PROMOTED_FREIGHT}"]', ".components[0]"):
        assert written in scripts
    assert "gh pr create" in scripts


def test_the_kargo_folder_builds_with_the_golden_config_map(tmp_path: Path) -> None:
    """``env/kargo/`` as Argo CD's kustomize builds it: the Kargo objects and the golden
    ConfigMap (the presets Component's patch finds no FluxDeployment there, and may not)."""
    kubectl = ROOT / ".tools" / "bin" / "kubectl"
    if not kubectl.is_file():
        pytest.skip(f"kubectl is not installed at {kubectl.relative_to(ROOT)}: run `make tools`")
    shutil.copytree(EXAMPLE / "env" / "kargo", tmp_path / "kargo")
    # The remote Component at `main`: the example's copy of the presets repository.
    shutil.copytree(EXAMPLE / "presets", tmp_path / "presets")
    kustomization = tmp_path / "kargo" / "kustomization.yaml"
    doc = yaml.safe_load(kustomization.read_text())
    assert doc["components"] == ["https://github.com/acme/flux-presets.git//fluxserve?ref=main"]
    doc["components"] = ["../presets/fluxserve"]
    kustomization.write_text(yaml.safe_dump(doc))
    built = subprocess.run(
        [str(kubectl), "kustomize", str(tmp_path / "kargo")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["AnalysisTemplate", "ConfigMap", "Project", "Stage", "Stage", "Warehouse"]
    (golden,) = [o for o in objects if o["kind"] == "ConfigMap"]
    template = next(o for o in objects if o["kind"] == "AnalysisTemplate")
    pod = template["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]
    mounted = {"name": "golden", "configMap": {"name": golden["metadata"]["name"]}}
    assert mounted in pod["volumes"]

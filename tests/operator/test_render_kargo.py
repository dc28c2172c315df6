"""``render --kargo``: the Kargo Project, Warehouse and Stages and the quality gate's
AnalysisTemplate, validated against the schemas Kargo v1.11.2 and Argo Rollouts v1.9.1
publish (tests/operator/promotion_schemas, with their source), and the one-line errors
for a FluxDeployment that cannot be promoted."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import yaml
from crdschema import validate

from flux_operator.cli import main as cli_main
from flux_operator.render.kargo import PROMOTED_FREIGHT
from flux_operator.spec.quality import QualityGate, gate_arguments

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "promotion" / "env" / "production" / "fluxdeployment.yaml"
SCHEMAS = Path(__file__).parent / "promotion_schemas"
CRDS = {
    "Project": SCHEMAS / "kargo" / "kargo.akuity.io_projects.yaml",
    "Warehouse": SCHEMAS / "kargo" / "kargo.akuity.io_warehouses.yaml",
    "Stage": SCHEMAS / "kargo" / "kargo.akuity.io_stages.yaml",
    "AnalysisTemplate": SCHEMAS / "argo-rollouts" / "analysis-template-crd.yaml",
}
STEPS = SCHEMAS / "kargo" / "steps"


@cache
def crd(kind: str) -> dict[str, Any]:
    return dict(yaml.safe_load(CRDS[kind].read_text()))


def render(path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert cli_main(["render", "--kargo", str(path)]) == 0, capsys.readouterr().err
    return [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]


def _json_schema_validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # argocd-update's schema refers to argocd-common.json beside it, as Kargo loads them.
    common = json.loads((STEPS / "argocd-common.json").read_text())
    registry: referencing.Registry = referencing.Registry().with_resource(
        "argocd-common.json", referencing.Resource.from_contents(common)
    )
    return jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.FormatChecker()
    )


def kargo_errors(obj: dict[str, Any]) -> list[str]:
    """What Kargo would refuse: the CRD's schema, then each subscription and step config
    against the schema Kargo checks it with."""
    errors = [f"{path}: {message}" for path, message in validate(crd(obj["kind"]), obj)]
    if obj["kind"] == "Warehouse":
        for sub in obj["spec"]["subscriptions"]:
            ((kind, body),) = sub.items()
            schema = json.loads((SCHEMAS / "kargo" / "subscriptions" / f"{kind}.json").read_text())
            errors += [
                f"{kind}: {e.message}" for e in _json_schema_validator(schema).iter_errors(body)
            ]
    if obj["kind"] == "Stage":
        for step in obj["spec"]["promotionTemplate"]["spec"]["steps"]:
            schema = json.loads((STEPS / f"{step['uses']}-config.json").read_text())
            found = _json_schema_validator(schema).iter_errors(step["config"])
            errors += [f"{step['uses']}: {e.message}" for e in found]
    return errors


def test_every_rendered_object_validates_against_the_published_schemas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    objects = render(EXAMPLE, capsys)
    kinds = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("kargo.akuity.io/v1alpha1", "Project", "flux-dev"),
        ("kargo.akuity.io/v1alpha1", "Warehouse", "flux-dev"),
        ("argoproj.io/v1alpha1", "AnalysisTemplate", "flux-dev-quality"),
        ("kargo.akuity.io/v1alpha1", "Stage", "staging"),
        ("kargo.akuity.io/v1alpha1", "Stage", "production"),
    ]
    for obj in objects:
        assert kargo_errors(obj) == [], obj["kind"]
    # Everything but the cluster-scoped Project lives in the Project's namespace.
    assert {o["metadata"].get("namespace") for o in objects[1:]} == {"flux-dev"}


def test_the_schemas_refuse_what_kargo_would_refuse(capsys: pytest.CaptureFixture[str]) -> None:
    # Not vacuous: each check rejects a plausible mistake.
    _, warehouse, template, staging, _ = render(EXAMPLE, capsys)
    bad = copy.deepcopy(warehouse)
    bad["spec"]["subscriptions"][0]["image"]["repoURL"] = "ghcr.io/acme/fluxserve-server:v1"
    assert any("does not match" in e for e in kargo_errors(bad))
    bad = copy.deepcopy(staging)
    bad["spec"]["promotionTemplate"]["spec"]["steps"][1]["config"]["updates"][0].pop("value")
    assert any("'value' is a required property" in e for e in kargo_errors(bad))
    bad = copy.deepcopy(staging)
    del bad["spec"]["requestedFreight"]
    assert any("requestedFreight" in e for e in kargo_errors(bad))
    bad = copy.deepcopy(template)
    bad["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"][0][
        "volumeMount"
    ] = []
    assert any("volumeMount" in e for e in kargo_errors(bad))


def test_promotion_writes_release_freight_and_presets_ref_and_syncs_the_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    *_, staging, production = render(EXAMPLE, capsys)
    assert staging["spec"]["requestedFreight"][0]["sources"] == {"direct": True}
    assert production["spec"]["requestedFreight"][0]["sources"] == {"stages": ["staging"]}
    for stage in (staging, production):
        name = stage["metadata"]["name"]
        steps = stage["spec"]["promotionTemplate"]["spec"]["steps"]
        uses = [s["uses"] for s in steps]
        assert uses == [
            "git-clone",
            "yaml-update",
            "yaml-update",
            "git-commit",
            "git-push",
            "argocd-update",
        ]
        release, presets = steps[1]["config"], steps[2]["config"]
        assert release["path"] == f"./repo/env/{name}/fluxdeployment.yaml"
        assert release["updates"] == [
            {"key": "spec.release", "value": "${{ imageFrom(vars.image).Tag }}"},
            {
                "key": "metadata.annotations." + PROMOTED_FREIGHT.replace(".", "\\."),
                "value": "${{ ctx.targetFreight.name }}",
            },
        ]
        assert presets["path"] == f"./repo/env/{name}/kustomization.yaml"
        assert presets["updates"][0]["key"] == "components.0"
        assert presets["updates"][0]["value"].endswith(
            "?ref=${{ commitFrom(vars.presetsRepo).ID }}"
        )
        assert steps[5]["config"]["apps"][0]["name"] == f"flux-dev-{name}"
    assert "verification" not in production["spec"]  # production's canary runs the gate


def test_verification_runs_the_gate_with_the_specs_thresholds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, template, staging, _ = render(EXAMPLE, capsys)
    verification = staging["spec"]["verification"]
    assert verification["analysisTemplates"] == [{"name": "flux-dev-quality"}]
    args = {a["name"]: a["value"] for a in verification["args"]}
    assert args == {
        "release": "${{ imageFrom(vars.image).Tag }}",
        "stable-url": "http://flux-dev.flux-dev-production.svc.cluster.local:8080",
        "candidate-url": "http://flux-dev.flux-dev-staging.svc.cluster.local:8080",
    }
    assert [a["name"] for a in template["spec"]["args"]] == list(args)
    job = template["spec"]["metrics"][0]["provider"]["job"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    gate = QualityGate.model_validate(spec["rollout"]["canary"]["analysis"]["quality"])
    assert container["command"] == gate_arguments(
        gate, stable_url="{{args.stable-url}}", candidate_url="{{args.candidate-url}}"
    )
    assert "0.6" in container["command"]  # the example's minSimilarity, not the default
    assert container["image"] == "ghcr.io/acme/fluxserve-server:{{args.release}}"
    assert {"name": "golden", "mountPath": "/golden", "readOnly": True} in container["volumeMounts"]
    assert {"name": "golden", "configMap": {"name": "flux-golden"}} in pod["volumes"]
    assert job["activeDeadlineSeconds"] == 900 and job["backoffLimit"] == 0


def _broken(tmp_path: Path, change: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    change(doc)
    path = tmp_path / "fd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _drop_quality(doc: dict[str, Any]) -> None:
    del doc["spec"]["rollout"]["canary"]["analysis"]["quality"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["metadata"]["annotations"].pop("fluxserve.dev/presets-repo"),
            "flux-dev: metadata.annotations[fluxserve.dev/presets-repo]: required by --kargo",
        ),
        (
            lambda d: d["metadata"]["annotations"].update({"fluxserve.dev/gitops-branch": "-x"}),
            "flux-dev: metadata.annotations[fluxserve.dev/gitops-branch]: '-x' is not a branch",
        ),
        (
            lambda d: d["metadata"]["annotations"].update(
                {"fluxserve.dev/gitops-repo": "git@github.com:acme/env.git"}
            ),
            "flux-dev: metadata.annotations[fluxserve.dev/gitops-repo]: 'git@github.com:acme/"
            "env.git' is not an https URL",
        ),
        (lambda d: d["spec"].pop("image"), "flux-dev: spec.image: required by --kargo"),
        (
            lambda d: d["spec"].update({"image": "ghcr.io/acme/fluxserve-server:v1.4.1"}),
            "flux-dev: spec.image: 'ghcr.io/acme/fluxserve-server:v1.4.1' pins a tag or digest",
        ),
        (
            lambda d: d["spec"].update({"release": "latest"}),
            "flux-dev: spec.release: 'latest' is not a semantic version",
        ),
        (_drop_quality, "flux-dev: spec.rollout.canary.analysis.quality: required by --kargo"),
        (
            lambda d: d["spec"]["rollout"].update({"strategy": "RollingUpdate"}),
            "flux-dev: spec.rollout.strategy: RollingUpdate gives production no canary",
        ),
        (
            lambda d: d["spec"].update({"image": "ghcr.io/acme//fluxserve-server"}),
            "flux-dev: spec.image: 'ghcr.io/acme//fluxserve-server' is not an image repository",
        ),
    ],
    ids=[
        "no-presets-repo",
        "bad-branch",
        "ssh-gitops-repo",
        "no-image",
        "tagged-image",
        "release",
        "no-gate",
        "no-canary",
        "bad-repository",
    ],
)
def test_what_cannot_be_promoted_is_one_line_naming_the_field(
    change: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["render", "--kargo", str(_broken(tmp_path, change))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1


def test_an_invalid_spec_is_refused_before_kargo_is_considered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _broken(tmp_path, lambda d: d["spec"].update({"replicas": -1}))
    assert cli_main(["render", "--kargo", str(path)]) == 1
    assert "flux-dev: spec.replicas" in capsys.readouterr().err

"""The operator chart, rendered and checked with the real helm binary.

Every values file under charts/fluxserve-operator/ci/ must lint cleanly in strict
mode and render to objects that are valid against the Kubernetes 1.33 schemas
(custom resources against their CRD's schema); values.schema.json must refuse
wrong types and unknown keys; the chart's CRDs are the generated ones; the
chart grants exactly the operator's declared RBAC rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .conftest import CHART, KUBE_VERSION, ROOT, Helm

K8S_VERSION = KUBE_VERSION
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# Resources that live outside namespaces; namespaced rules must not name them.
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings", "nodes"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix("-values.yaml") for p in paths]


def _crd_schemas(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema for every CRD version in the rendered output."""
    schemas = {}
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Expand PolicyRules into (apiGroup, resource, verb): equal grants, equal sets."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def test_chart_has_values_files_to_test() -> None:
    assert len(CI_VALUES) >= 3, CI_VALUES


@pytest.mark.parametrize("values", CI_VALUES, ids=_ids(CI_VALUES))
def test_lint_strict(helm: Helm, values: Path) -> None:
    proc = helm.run("lint", "--strict", str(CHART), "--values", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=_ids(CI_VALUES))
def test_rendered_objects_are_valid_kubernetes(helm: Helm, values: Path) -> None:
    docs = helm.template([values])
    crd_schemas = _crd_schemas(docs)
    assert _by_kind(docs, "Deployment"), "no operator Deployment rendered"
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        key = (doc["apiVersion"], doc["kind"])
        if key in crd_schemas:
            # A custom resource: the API server would check it against its CRD.
            jsonschema.validate(doc, crd_schemas[key])
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{values.name}: {name}: neither a Kubernetes {K8S_VERSION} kind nor a CRD")
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{values.name}: {name}: {err.message} at {list(err.path)}")


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["replicaCount=two"], "/replicaCount"),
        (["replicaCount=-1"], "/replicaCount"),
        (["imagee.tag=v1"], "imagee"),
        (["image.tags=v1"], "tags"),
        (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["image.digest=md5:abc"], "/image/digest"),
        (["healthPort=70000"], "/healthPort"),
        (["watchNamespaces[0]=Not_A_Namespace"], "/watchNamespaces/0"),
        (["leaderElection.enabled=yes"], "/leaderElection/enabled"),
        (["rbac.create=1"], "/rbac/create"),
        (["resources.requests.memory=lots"], "/resources/requests/memory"),
        (["sampleFluxDeployment.spec=text"], "/sampleFluxDeployment/spec"),
        # Two active operators would fight over every FluxDeployment.
        (["replicaCount=2"], "/leaderElection"),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, sets: list[str], expected: str) -> None:
    args = ["template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm.run(*args)
    assert proc.returncode != 0, f"helm accepted {sets}"
    assert "schema" in proc.stderr
    assert expected in proc.stderr, proc.stderr


def test_schema_rejects_unknown_key_from_values_file(helm: Helm, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"serviceAccount": {"create": True, "annotation": {}}}))
    proc = helm.run("template", "x", str(CHART), "--values", str(bad))
    assert proc.returncode != 0
    assert "'annotation' not allowed" in proc.stderr, proc.stderr


def test_every_value_is_documented() -> None:
    """Each key in values.yaml carries a comment, and the schema knows every key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load("\n".join(lines))
    for key in values:
        assert key in schema["properties"], f"{key} is not in values.schema.json"
    parent_documented = False  # a documented top-level map covers its whole value
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        documented = lines[i - 1].strip().startswith("#")
        if not line.startswith(" "):
            parent_documented = documented
            is_section = stripped.split(":", 1)[1].strip() == ""
            assert documented or is_section, f"values.yaml:{i + 1} {stripped!r} has no comment"
        elif line.startswith("  ") and not line.startswith("   ") and not parent_documented:
            assert documented, f"values.yaml:{i + 1} {stripped!r} has no comment"


def test_chart_crds_are_the_generated_crds() -> None:
    top = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert "fluxserve.dev_fluxdeployments.yaml" in top, "crds/ has no FluxDeployment CRD"
    assert chart.keys() == top.keys(), "charts/fluxserve-operator/crds differs from crds/"
    for name in top:
        assert chart[name] == top[name], (
            f"charts/fluxserve-operator/crds/{name} is stale: run "
            "`python -m flux_operator.crdgen charts/fluxserve-operator/crds`"
        )


@pytest.mark.parametrize("values", CI_VALUES, ids=_ids(CI_VALUES))
def test_cluster_roles_grant_exactly_the_operator_rules(helm: Helm, values: Path) -> None:
    from flux_operator.rbac import RULES

    docs = helm.template([values])
    roles = _by_kind(docs, "ClusterRole")
    granted = _triples([rule for role in roles for rule in role["rules"]])
    assert granted == _triples(RULES), (
        f"chart grants {sorted(granted - _triples(RULES))} beyond RULES and "
        f"misses {sorted(_triples(RULES) - granted)}"
    )
    # The role bound per namespace holds no cluster-scoped resource (it would be inert),
    # and the cluster-wide one nothing namespaced.
    for role in roles:
        resources = {r.split("/")[0] for rule in role["rules"] for r in rule["resources"]}
        if role["metadata"]["name"].endswith("-cluster"):
            assert resources <= CLUSTER_SCOPED, role["metadata"]["name"]
        else:
            assert not resources & CLUSTER_SCOPED, role["metadata"]["name"]


def test_watch_namespaces_bind_only_those_namespaces(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "namespaced-values.yaml"])
    bindings = _by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    cluster_bindings = _by_kind(docs, "ClusterRoleBinding")
    assert [b["roleRef"]["name"] for b in cluster_bindings] == ["fluxserve-operator-cluster"]
    (deploy,) = _by_kind(docs, "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "fluxserve"


def test_all_namespaces_by_default(helm: Helm) -> None:
    docs = helm.template()
    assert not _by_kind(docs, "RoleBinding")
    assert len(_by_kind(docs, "ClusterRoleBinding")) == 2
    (deploy,) = _by_kind(docs, "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--namespace", "--peering"))]
    assert deploy["spec"]["strategy"]["type"] == "Recreate"


def test_deployment_meets_restricted_pod_security(helm: Helm) -> None:
    (deploy,) = _by_kind(helm.template(), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_image_tag_defaults_to_app_version_and_digest_wins(helm: Helm) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

    def image(*sets: str) -> str:
        (deploy,) = _by_kind(helm.template(sets=sets), "Deployment")
        return deploy["spec"]["template"]["spec"]["containers"][0]["image"]

    assert image() == f"ghcr.io/fluxserve/fluxserve-operator:{app_version}"
    assert image("image.tag=v9.9.9").endswith(":v9.9.9")
    digest = "sha256:" + "a" * 64
    assert image("image.tag=v9.9.9", f"image.digest={digest}").endswith(f"@{digest}")


def test_leader_election_renders_peering(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "ha-values.yaml"])
    (deploy,) = _by_kind(docs, "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=fluxserve-operator" in args
    # Each pod's kopf priority comes from its own name: kopf pauses every peer that meets
    # another of the same priority, so replicas must not share one.
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    from flux_operator.commands import with_identity
    from flux_operator.settings import load_settings

    pods = ("fluxserve-operator-7d9f8-abcde", "fluxserve-operator-7d9f8-fghij")
    priorities = {with_identity(load_settings(args, {}), {"POD_ID": pod}).priority for pod in pods}
    assert len(priorities) == 2
    (peering,) = _by_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "fluxserve-operator"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]

    docs = helm.template([CHART / "ci" / "namespaced-ha-sample-values.yaml"])
    (peering,) = _by_kind(docs, "KopfPeering")
    assert (peering["metadata"]["namespace"], peering["metadata"]["name"]) == (
        "inference",
        "fluxserve",
    )
    (sample,) = _by_kind(docs, "FluxDeployment")
    assert sample["metadata"]["namespace"] == "inference"
    from flux_operator.spec import FluxDeploymentSpec

    FluxDeploymentSpec.model_validate(sample["spec"])  # unknown fields refused too


def test_long_release_names_stay_within_63_characters(helm: Helm) -> None:
    release = "a" * 53  # helm's own limit for release names
    docs = helm.template([CHART / "ci" / "ha-values.yaml"], release=release)
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]


def _notes(helm: Helm, *values: Path) -> str:
    args = ["install", "fluxserve-operator", str(CHART), "--dry-run=client", "-n", "ops"]
    for f in values:
        args += ["--values", str(f)]
    proc = helm.run(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_tell_the_next_step_with_a_valid_fluxdeployment(helm: Helm) -> None:
    from flux_operator.spec import FluxDeploymentSpec

    notes = _notes(helm)
    assert "kubectl -n ops rollout status deployment/fluxserve-operator" in notes
    assert "in all namespaces" in notes
    # The FluxDeployment the notes suggest is one the CRD and the operator accept.
    snippet = notes.split("<<'YAML'\n", 1)[1].split("YAML\n", 1)[0]
    doc = yaml.safe_load("\n".join(line[5:] for line in snippet.splitlines()))
    crd = yaml.safe_load((ROOT / "crds" / "fluxserve.dev_fluxdeployments.yaml").read_text())
    jsonschema.validate(doc, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    FluxDeploymentSpec.model_validate(doc["spec"])
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert doc["spec"]["release"] == app_version


def test_notes_follow_the_values(helm: Helm) -> None:
    notes = _notes(helm, CHART / "ci" / "namespaced-ha-sample-values.yaml")
    assert "FluxDeployments in: inference." in notes
    assert "kubectl -n inference get fluxdeployment flux-sample -w" in notes


@pytest.mark.parametrize("values", CI_VALUES, ids=_ids(CI_VALUES))
def test_operator_accepts_the_rendered_arguments(helm: Helm, values: Path) -> None:
    """The container args parse with the operator's own command line."""
    from flux_operator.settings import load_settings

    chart_values = yaml.safe_load(values.read_text()) or {}
    (deploy,) = _by_kind(helm.template([values]), "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    settings = load_settings(container["args"], {})
    assert list(settings.namespaces) == chart_values.get("watchNamespaces", [])
    assert (settings.peering is not None) == chart_values.get("leaderElection", {}).get(
        "enabled", False
    )
    assert container["ports"][0]["containerPort"] == settings.health_port
    assert chart_values.get("healthPort", 8081) == settings.health_port


def test_disruption_budget_only_with_several_replicas(helm: Helm) -> None:
    assert not _by_kind(helm.template(), "PodDisruptionBudget")
    (pdb,) = _by_kind(helm.template([CHART / "ci" / "ha-values.yaml"]), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_helm_is_the_pinned_binary(helm: Helm) -> None:
    """`make tools` installed exactly the helm that hack/install-tools.sh pins."""
    import hashlib
    import platform
    import re

    script = (ROOT / "hack" / "install-tools.sh").read_text()
    pins = dict(re.findall(r'^(HELM_VERSION|HELM_SHA256)="([^"]+)"$', script, re.MULTILINE))
    version = helm.run("version", "--template", "{{.Version}}").stdout.strip()
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert version == pins["HELM_VERSION"]
        digest = hashlib.sha256(helm.binary.read_bytes()).hexdigest()
        assert digest == pins["HELM_SHA256"]
    else:  # no pinned binary for this platform: a helm of the same major version
        assert version.split(".")[0] == pins["HELM_VERSION"].split(".")[0]


def test_cluster_roles_cover_every_child_the_operator_renders(helm: Helm) -> None:
    """Derived from the objects themselves: for each kind the operator renders for the
    FluxDeployment kept in git, the chart grants what bringing it into being takes: read
    it (list and watch: the operator reads its watch cache) and create it, and patch it
    unless it is immutable (a new one replaces it)."""
    from flux_operator.render import Owner, render_all
    from flux_operator.spec import FluxDeploymentSpec

    (fxd,) = yaml.safe_load_all((ROOT / "deploy/argocd/fluxdeployments/flux-dev.yaml").read_text())
    spec = FluxDeploymentSpec.model_validate(fxd["spec"])
    children = render_all(Owner(name="flux-dev", namespace="inference", uid="u-1"), spec)
    roles = _by_kind(helm.template(), "ClusterRole")
    granted = _triples([rule for role in roles for rule in role["rules"]])
    kinds = set()
    for child in children:
        group = child["apiVersion"].rpartition("/")[0]
        resource = child["kind"].lower() + "s"
        kinds.add(child["kind"])
        verbs = ["list", "watch", "create"] + ([] if child.get("immutable") else ["patch"])
        for verb in verbs:
            assert (group, resource, verb) in granted, (group, resource, verb)
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"} <= kinds

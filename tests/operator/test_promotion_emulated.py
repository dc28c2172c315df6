"""One release from staging to production, canary included: the objects of
``render --kargo`` played by a stand-in for Kargo and Argo CD (tests/operator/
kargo_standin.py), the real operator against the Kubernetes API emulator.

The stand-in does to the GitOps repository exactly what the rendered Stages' steps say —
``spec.release``, the annotation ``fluxserve.dev/promoted-freight`` and the presets
Component's ``?ref=`` — and syncs it through ``kubectl kustomize``; the operator sees
only what Argo CD would apply. The test plays the Deployment controller. Production's
canary here is the example's, shortened to one step with a pause and without analysis:
judging a canary (Prometheus, the quality gate) is tested where the analysis is.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Cluster, OperatorHandle, condition
from kargo_standin import ArgoCdStandIn, Freight, KargoStandIn

from flux_operator.cli import main as cli_main
from flux_operator.render.kargo import PROMOTED_FREIGHT

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "promotion"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
NAME = "flux-dev"
IMAGE = "ghcr.io/acme/fluxserve-server"


class Env:
    """One environment's namespace in the emulator (the Cluster helpers use one namespace)."""

    def __init__(self, cluster: Cluster, stage: str) -> None:
        self.cluster = cluster
        self.namespace = f"{NAME}-{stage}"

    async def get(self, kind: str, name: str = NAME) -> dict[str, Any] | None:
        return await self.cluster.get(kind, name, self.namespace)

    async def patch(self, kind: str, name: str, body: dict[str, Any]) -> None:
        url = self.cluster.path(kind, name, self.namespace)
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.cluster.session.patch(url, json=body, headers=headers) as resp:
            resp.raise_for_status()

    async def apply(self, obj: dict[str, Any]) -> None:
        """Argo CD's sync of one object: create it, or patch what git says."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        if await self.get(kind, name) is None:
            url = self.cluster.path(kind, namespace=self.namespace)
            async with self.cluster.session.post(url, json=obj) as resp:
                resp.raise_for_status()
        else:
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
            await self.patch(kind, name, body)

    async def serve(self, name: str, release: str) -> None:
        """Playing the Deployment controller: once ``name`` runs ``release``, its pods are
        ready."""

        async def running() -> dict[str, Any] | None:
            found = await self.get("Deployment", name)
            containers = (found or {}).get("spec", {}).get("template", {}).get("spec", {})
            image = (containers.get("containers") or [{}])[0].get("image")
            return found if image == f"{IMAGE}:{release}" else None

        deployment = await self.cluster.wait_for(running, f"{self.namespace}/{name} {release}")
        pods = int(deployment["spec"].get("replicas", 1))
        status = {
            "observedGeneration": int(deployment["metadata"].get("generation", 1)),
            "replicas": pods,
            "readyReplicas": pods,
            "updatedReplicas": pods,
            "availableReplicas": pods,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }
        await self.patch("Deployment", name, {"status": status})

    async def wait_status(self, predicate: Any, what: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            status = ((await self.get("FluxDeployment")) or {}).get("status") or {}
            return status if status and predicate(status) else None

        return await self.cluster.wait_for(check, f"{self.namespace}: {what}")

    async def ready_on(self, release: str) -> dict[str, Any]:
        await self.serve(NAME, release)
        return await self.wait_status(
            lambda s: s.get("phase") == "Ready" and s.get("currentRelease") == release,
            f"Ready on {release}",
        )


def gitops_repository(tmp_path: Path) -> Path:
    """The example's ``env/`` at a first commit, production's canary shortened."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE / "env", repo / "env")
    path = repo / "env" / "production" / "fluxdeployment.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["rollout"]["canary"] = {"steps": [{"weight": 50, "pause": "1s"}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return repo


def presets_repository(tmp_path: Path) -> dict[str, Path]:
    """Two commits of the presets repository: ``p1`` before the watercolor preset, ``p2``
    (the example) with it."""
    p2 = tmp_path / "presets-p2"
    shutil.copytree(EXAMPLE / "presets", p2)
    p1 = tmp_path / "presets-p1"
    shutil.copytree(EXAMPLE / "presets", p1)
    patch = p1 / "fluxserve" / "presets.yaml"
    doc = yaml.safe_load(patch.read_text())
    del doc["spec"]["stylePresets"]["watercolor"]
    patch.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"p1": p1, "p2": p2}


async def presets_of(env: Env, status: dict[str, Any]) -> str:
    config_map = await env.get("ConfigMap", status["history"][-1]["presetsConfigMap"])
    assert config_map is not None
    return str(config_map["data"])


async def test_one_release_walks_from_staging_to_production_through_a_canary(
    cluster: Cluster,
    operator: OperatorHandle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not KUBECTL.is_file():
        pytest.skip(f"kubectl is not installed at {KUBECTL.relative_to(ROOT)}: run `make tools`")
    assert cli_main(["render", "--kargo", str(EXAMPLE / "env/production/fluxdeployment.yaml")]) == 0
    objects = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    repo = gitops_repository(tmp_path)
    argocd = ArgoCdStandIn(repo, presets_repository(tmp_path), KUBECTL, tmp_path / "build")
    envs = {stage: Env(cluster, stage) for stage in ("staging", "production")}

    async def sync(app: str, revision: str) -> None:
        stage = app.removeprefix(f"{NAME}-")
        assert revision == kargo.commits[-1]  # Argo CD syncs to the pushed commit
        built = argocd.render(stage)
        golden = next(o for o in built if o["kind"] == "ConfigMap")
        assert golden["metadata"]["name"] == "flux-golden" and "golden.yaml" in golden["data"]
        for obj in built:
            await envs[stage].apply(obj)

    kargo = KargoStandIn(objects, repo, sync)
    staging, production = envs["staging"], envs["production"]

    # Freight 0 (the release running today) reaches both environments: their first sync.
    first = Freight("f0", "v1.4.1", "p1")
    await kargo.promote("staging", first)
    await staging.ready_on("v1.4.1")
    with pytest.raises(AssertionError, match="takes freight verified in"):
        await kargo.promote("production", first)  # not verified in staging yet
    kargo.verify("staging", first)
    await kargo.promote("production", first)
    status = await production.ready_on("v1.4.1")
    assert "watercolor" not in await presets_of(production, status)

    # Freight 1: a new release and a new preset. Staging is replaced at once.
    new = Freight("f1", "v1.5.0", "p2")
    await kargo.promote("staging", new)
    status = await staging.ready_on("v1.5.0")
    fd = await staging.get("FluxDeployment")
    assert fd is not None and fd["metadata"]["annotations"][PROMOTED_FREIGHT] == "f1"
    assert "watercolor" in await presets_of(staging, status)
    args = {a["name"]: a["value"] for a in kargo.verify("staging", new)}
    assert args["release"] == "v1.5.0"
    assert args["candidate-url"].startswith(f"http://{NAME}.{NAME}-staging.svc")
    assert args["stable-url"].startswith(f"http://{NAME}.{NAME}-production.svc")
    assert await production.get("Deployment", f"{NAME}-canary") is None  # not yet

    # Production takes the verified freight through its canary.
    await kargo.promote("production", new)
    await production.serve(f"{NAME}-canary", "v1.5.0")
    canary = await production.wait_status(
        lambda s: (s.get("canary") or {}).get("release") == "v1.5.0", "a canary of v1.5.0"
    )
    assert canary["currentRelease"] == "v1.4.1"  # stable still serves the old release
    await production.wait_status(lambda s: s["canary"]["phase"] == "Promoting", "promoting")
    status = await production.ready_on("v1.5.0")
    assert status["canary"]["phase"] == "Promoted"
    outcomes = [(e["release"], e["outcome"]) for e in status["history"]]
    assert outcomes == [("v1.4.1", "Superseded"), ("v1.5.0", "Available")]
    assert "watercolor" in await presets_of(production, status)
    assert condition(status, "Ready")["status"] == "True"
    fd = await production.get("FluxDeployment")
    assert fd is not None and fd["metadata"]["annotations"][PROMOTED_FREIGHT] == "f1"

    # What the promotions left in git: each environment names the release and the commit.
    for stage in ("staging", "production"):
        written = yaml.safe_load((repo / "env" / stage / "fluxdeployment.yaml").read_text())
        assert written["spec"]["release"] == "v1.5.0"
        kustomization = yaml.safe_load((repo / "env" / stage / "kustomization.yaml").read_text())
        assert kustomization["components"] == [
            "https://github.com/acme/flux-presets.git//fluxserve?ref=p2"
        ]
    assert operator.crashed() is None

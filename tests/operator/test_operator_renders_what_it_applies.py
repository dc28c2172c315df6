"""One list of children: what the operator applies to the API server is, object for object
and in order, what ``python -m flux_operator render`` prints for the same resource."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from conftest import NAMESPACE, Cluster, OperatorHandle, base_spec

from flux_operator.cli import main as cli_main
from flux_operator.render import Owner, render_all
from flux_operator.spec import FluxDeploymentSpec

GATEWAY = {"parentRefs": [{"name": "inference-gw", "namespace": "infra"}]}
SPECS = {
    # Every kind a RollingUpdate resource can have: both ConfigMaps, the Deployment, the
    # Service, the route, the NetworkPolicy and the HPA.
    "rolling-update": base_spec(
        safety={"blocklist": ["gore"]},
        networkPolicy={"from": [{"namespace": "gateway"}]},
        gateway=GATEWAY,
    ),
    # Strategy Canary before any canary: the stable side labelled, the track Services, the
    # route all on stable.
    "canary": base_spec(
        rollout={
            "strategy": "Canary",
            "canary": {"steps": [{"weight": 20, "pause": "1m"}]},
        },
        gateway=GATEWAY,
    ),
}


# What ApiServerEmulator adds to a created object's body (the API server's bookkeeping).
_SERVER_FIELDS = ("uid", "generation", "creationTimestamp")


def _applied(server: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    """The bodies of the operator's writes of children (creations and applies), in order,
    as the operator sent them."""
    bodies = []
    for request in list(server):
        if request.action not in (kmock.action.CREATE, kmock.action.UPDATE):
            continue
        if request.resource is None or request.subresource is not None:
            continue
        if request.resource.plural in ("fluxdeployments", "events"):
            continue
        body = copy.deepcopy(request.data)
        for key in _SERVER_FIELDS:
            body["metadata"].pop(key, None)
        bodies.append(body)
    return bodies


def _without_owner(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("ownerReferences", None)
    return out


@pytest.mark.parametrize("case", sorted(SPECS))
async def test_the_operator_applies_what_render_prints(
    cluster: Cluster,
    operator: OperatorHandle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    spec = SPECS[case]
    created = await cluster.create_fd("flux-dev", spec)
    owner = Owner(name="flux-dev", namespace=NAMESPACE, uid=created["metadata"]["uid"])
    rendered = render_all(owner, FluxDeploymentSpec.model_validate(spec))

    async def all_stored() -> bool:
        for obj in rendered:
            if await cluster.get(obj["kind"], obj["metadata"]["name"]) is None:
                return False
        return True

    await cluster.wait_for(all_stored, "every rendered child")
    await cluster.wait_status("flux-dev", lambda s: s.get("history"), "a first revision")
    applied = _applied(cluster.server)
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == [
        (o["kind"], o["metadata"]["name"]) for o in rendered
    ]
    assert applied == rendered
    assert operator.crashed() is None

    # The CLI renders a file, where the resource has no uid yet: the same objects, without
    # the owner reference the API server's uid makes possible.
    path = tmp_path / "fxd.yaml"
    resource = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-dev", "namespace": NAMESPACE},
        "spec": spec,
    }
    path.write_text(yaml.safe_dump(resource))
    capsys.readouterr()
    assert cli_main(["render", str(path)]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert printed == [_without_owner(o) for o in applied]

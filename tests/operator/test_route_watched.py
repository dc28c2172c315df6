"""The canary's HTTPRoute is watched: a traffic split edited or a route deleted behind
the operator's back is repaired at once, not at the next periodic pass (which this test
puts an hour away)."""

from __future__ import annotations

from conftest import Cluster, OperatorHandle
from test_operator_canary import canary_spec, ready_on, weights

HOUR = 3600.0


async def test_an_edited_or_deleted_route_is_repaired_without_the_periodic_pass(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await operator.stop()
    operator.settings = operator.settings.model_copy(update={"resync_seconds": HOUR})
    await operator.start()
    await ready_on(cluster, "flux", canary_spec([{"weight": 25, "pause": "1h"}], gateway=True))
    stable = {"flux-stable": 100, "flux-canary": 0}

    async def split() -> dict[str, int] | None:
        route = await cluster.get("HTTPRoute", "flux")
        return weights(route) if route is not None else None

    assert await cluster.wait_for(lambda: _is(split, stable), "the route, all to stable")

    # Someone sends half the traffic to the (idle) canary track by hand.
    route = await cluster.get("HTTPRoute", "flux")
    assert route is not None
    rules = route["spec"]["rules"]
    for ref in rules[0]["backendRefs"]:
        ref["weight"] = 50
    await cluster.patch("HTTPRoute", "flux", {"spec": {"rules": rules}})
    assert await cluster.wait_for(lambda: _is(split, stable), "the split restored", timeout=20)

    await cluster.delete("HTTPRoute", "flux")
    assert await cluster.wait_for(lambda: _is(split, stable), "the route recreated", timeout=20)
    assert operator.crashed() is None


async def _is(read, expected) -> bool:  # type: ignore[no-untyped-def]
    return await read() == expected

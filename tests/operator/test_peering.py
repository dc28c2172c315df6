"""Leader election: replicas of the operator Deployment must not share a kopf priority,
or kopf pauses all of them and nothing is reconciled; and who leads is read from kopf's
peering object by kopf's own rule."""

from __future__ import annotations

import datetime

import pytest

from flux_operator.commands import peering_priority, with_identity
from flux_operator.peering import leads, own_identity
from flux_operator.settings import load_settings


def _settings(argv: list[str], environ: dict[str, str]):
    return with_identity(load_settings(argv, environ), environ)


def test_pods_of_one_deployment_get_different_priorities() -> None:
    names = [f"fluxserve-operator-7d9c8b6f5-{suffix}" for suffix in ("x2k9p", "q8m4z", "bb7tn")]
    priorities = {_settings(["--peering=p"], {"POD_ID": name}).priority for name in names}
    assert len(priorities) == len(names)


def test_priority_is_stable_for_a_pod_and_fits_kopf() -> None:
    first = peering_priority("fluxserve-operator-abc")
    assert first == peering_priority("fluxserve-operator-abc")
    assert 0 <= first < 2**31


def test_explicit_priority_wins_over_pod_name() -> None:
    settings = _settings(["--peering=p", "--priority=7"], {"POD_ID": "pod-a"})
    assert (settings.peering, settings.priority) == ("p", 7)


def test_without_pod_name_priority_is_random_and_positive() -> None:
    priorities = {_settings([], {}).priority for _ in range(5)}
    assert len(priorities) > 1 and min(priorities) >= 1


NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


def _peer(priority: int, seen_seconds_ago: int = 0, lifetime: int = 60) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seen_seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        ({}, True),  # alone (or only itself in the object)
        ({"pod-b": _peer(5)}, True),  # a lower priority stands by
        ({"pod-b": _peer(20)}, False),  # a higher priority leads
        ({"pod-b": _peer(10)}, False),  # equal: kopf pauses both
        ({"pod-b": _peer(20, seen_seconds_ago=61)}, True),  # the higher one is dead
        ({"pod-b": {"priority": 20}}, False),  # no lastseen: alive, as kopf reads it
        ({"pod-b": {**_peer(20), "lastseen": "2026-01-01T11:59:59Z"}}, False),
    ],
)
def test_who_leads_is_kopfs_rule(others: dict[str, object], expected: bool) -> None:
    status = {"pod-a": _peer(10), **others}
    assert leads(status, "pod-a", 10, NOW) is expected


def test_identity_is_the_pod_name_else_unique() -> None:
    assert own_identity({"POD_ID": "fluxserve-operator-abc"}) == "fluxserve-operator-abc"
    assert own_identity({}) != own_identity({})

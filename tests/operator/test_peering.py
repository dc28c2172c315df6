"""Leader election: replicas of the operator Deployment must not share a kopf priority,
or kopf pauses all of them and nothing is reconciled."""

from __future__ import annotations

from flux_operator.cli import build_parser
from flux_operator.commands import peering_priority, settings_from_args


def _settings(argv: list[str], environ: dict[str, str]):
    return settings_from_args(build_parser().parse_args(["run", *argv]), environ)


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

"""The queue's decisions, without Redis: batches, turns, positions, estimates."""

from __future__ import annotations

from flux_server.queue.decisions import (
    Candidate,
    batch_key,
    eta_seconds,
    fair_order,
    fair_position,
    release_track,
    take_compatible,
    updated_rate,
)


def _payload(width: int = 64, steps: int = 2, adapters: list[list[object]] | None = None) -> dict:
    job = {"width": width, "height": 64, "steps": steps, "guidance_scale": 3.5,
           "true_cfg_scale": 1.0, "adapters": adapters or [], "num_images": 1}  # fmt: skip
    return {"kind": "generate", "job": job}


def _candidate(n: int, units: int = 1, **kw: object) -> Candidate:
    payload = _payload(**kw)  # type: ignore[arg-type]
    return Candidate("s", f"{n}-0", batch_key(payload), units, payload)


def test_batch_key_separates_size_steps_and_adapters() -> None:
    base = batch_key(_payload())
    assert batch_key(_payload()) == base
    assert batch_key(_payload(width=128)) != base
    assert batch_key(_payload(steps=4)) != base
    assert batch_key(_payload(adapters=[["ink", 1.0]])) != base


def test_a_batch_takes_compatible_entries_up_to_the_free_slots() -> None:
    a, b, c, d = _candidate(1), _candidate(2, width=128), _candidate(3), _candidate(4, units=2)
    taken, rest = take_compatible([a, b, c, d], free_units=3)
    assert taken == [a, c] and rest == [b, d]  # d's two images do not fit beside a and c
    assert take_compatible([], 4) == ([], [])
    big = _candidate(5, units=8)
    assert take_compatible([big], 4)[0] == [big]  # the first always runs


def test_a_priority_entry_leads_and_takes_no_normal_company() -> None:
    # As the in-process batcher's lane: a priority entry read after normal ones held
    # over from an earlier read runs first, and alone among normal entries of its shape.
    held, later = _candidate(1), _candidate(2)
    high = Candidate("s", "3-0", batch_key({**_payload(), "priority": True}), 1,
                     {**_payload(), "priority": True})  # fmt: skip
    assert batch_key(high.payload) != batch_key(held.payload)
    taken, rest = take_compatible([held, later, high], free_units=4)
    assert taken == [high] and rest == [held, later]


def test_keys_take_turns_least_recently_served_first() -> None:
    assert fair_order({"busy": 100.0, "new": 0.0, "other": 50.0}) == ["new", "other", "busy"]
    assert fair_order({"b": 1.0, "a": 1.0}) == ["a", "b"]


def test_one_keys_thousand_entries_do_not_push_back_another_keys_one() -> None:
    # Key B's only entry: ahead of it in its own stream nothing, and key A's 1,000
    # entries count once (one turn of A's per turn of B's).
    assert fair_position(0, [1000], priority_waiting=0) == 1
    # A's 500th entry waits behind its own 499 and B's one.
    assert fair_position(499, [1], priority_waiting=0) == 500
    # Priority entries run first.
    assert fair_position(0, [], priority_waiting=3) == 3


def test_eta_from_the_fleets_measured_rate() -> None:
    assert eta_seconds(3, fleet_rate=2.0) == 2.0
    assert eta_seconds(0, fleet_rate=0.0) is None
    assert updated_rate(0.0, 4, 2.0) == 2.0
    assert 2.0 < updated_rate(2.0, 4, 1.0) < 4.0
    assert updated_rate(2.0, 4, 0.0) == 2.0


def test_release_track_splits_by_weight_and_keeps_each_subject_on_its_side() -> None:
    subjects = [f"key-{i}" for i in range(4000)]
    assert {release_track("stable", None, s) for s in subjects} == {"stable"}
    assert {release_track("stable", 0, s) for s in subjects} == {"stable"}
    assert {release_track("stable", 100, s) for s in subjects} == {"canary"}
    at_20 = {s for s in subjects if release_track("stable", 20, s) == "canary"}
    at_50 = {s for s in subjects if release_track("stable", 50, s) == "canary"}
    assert 0.17 < len(at_20) / len(subjects) < 0.23
    assert at_20 <= at_50, "raising the weight moves subjects only towards the canary"
    assert all(release_track("stable", 20, s) == "canary" for s in at_20)  # fixed per subject

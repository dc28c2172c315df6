"""The experiments format: what a valid experiment is, and errors naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flux_contract.experiments import (
    EXPERIMENTS_FILE,
    Experiment,
    experiment_problems,
    experiments_from_file,
    experiments_to_file,
)

PRESETS = {"realistic", "impressionist", "水墨"}


def issue_example() -> dict[str, Any]:
    return {
        "name": "impressionist-filter",
        "preset": "realistic",
        "audience": {"header": "X-Customer-Group", "values": ["beta", "vip"]},
        "arms": [
            {"name": "control", "preset": "realistic", "weight": 50},
            {"name": "impressionist", "preset": "impressionist", "weight": 30},
            {"name": "ink", "preset": "水墨", "weight": 20},
        ],
        "salt": "2026-12",
    }


def file_of(*experiments: dict[str, Any]) -> str:
    return json.dumps({"experiments": list(experiments)}, ensure_ascii=False)


def test_round_trip_through_the_file() -> None:
    experiments = experiments_from_file(file_of(issue_example()), PRESETS)
    assert [arm.weight for arm in experiments[0].arms] == [50, 30, 20]
    content = experiments_to_file(experiments)
    assert "水墨" in content and '"salt":"2026-12"' in content
    assert experiments_from_file(content, PRESETS) == experiments
    assert experiments_to_file(experiments) == content  # stable: the ConfigMap hash is too


def test_no_experiments_is_an_empty_file() -> None:
    assert experiments_from_file("{}", set()) == []
    assert experiments_to_file([]) == '{"experiments":[]}'


def with_change(path: str, value: Any) -> dict[str, Any]:
    body = issue_example()
    target: Any = body
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is None:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return body


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (with_change("arms.2.weight", 25), "experiments[0].arms", "sum to 100, got 105"),
        (with_change("arms.1.name", "control"), "experiments[0].arms", "duplicate arm name"),
        (with_change("arms.0.weight", -1), "experiments[0].arms[0].weight", "greater than"),
        (with_change("arms.1", None), None, None),  # two arms are enough... if they sum to 100
        (with_change("arms", []), "experiments[0].arms", "at least 2"),
        (with_change("name", "a b"), "experiments[0].name", "whitespace"),
        (with_change("arms.0.preset", "a/b"), "experiments[0].arms[0].preset", "directories"),
        (with_change("audience.header", "X Group"), "experiments[0].audience.header", "pattern"),
        (with_change("audience.values", []), "experiments[0].audience.values", "at least 1"),
        (with_change("colour", "red"), "experiments[0].colour", "Extra inputs"),
    ],
)
def test_bad_experiments_name_the_field(
    body: dict[str, Any], field: str | None, message: str | None
) -> None:
    if field is None:  # 50 + 20 = 70
        with pytest.raises(ValueError, match=r"experiments\[0\]\.arms: weights must sum"):
            experiments_from_file(file_of(body), PRESETS)
        return
    with pytest.raises(ValueError) as info:
        experiments_from_file(file_of(body), PRESETS)
    text = str(info.value)
    assert text.startswith(EXPERIMENTS_FILE)
    assert f"{field}: " in text and message in text, text


def test_problems_across_experiments_and_presets() -> None:
    unknown_arm = with_change("arms.2.preset", "sumi-e")
    unknown_base = with_change("preset", "cartoon")
    second = with_change("name", "second")
    experiments = [Experiment.model_validate(b) for b in (unknown_arm, unknown_base, second)]
    problems = experiment_problems(experiments, PRESETS)
    assert problems == [
        "experiments[0].arms[2].preset: no style preset named 'sumi-e'",
        "experiments[1].name: 'impressionist-filter' is also experiments[0]'s name",
        "experiments[1].preset: no style preset named 'cartoon'",
        "experiments[2].preset: experiments[0] already runs on 'realistic'; "
        "one experiment per preset",
    ]
    with pytest.raises(ValueError, match=r"arms\[2\]\.preset: no style preset named 'sumi-e'"):
        experiments_from_file(file_of(unknown_arm), PRESETS)

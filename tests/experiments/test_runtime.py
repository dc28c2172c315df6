"""The request path's view of experiments: assign, serve, take feedback, list counts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from features.redis_server import RedisServer

from flux_client.experiments import EXPERIMENTS_FILE
from flux_client.presets import StylePreset, presets_to_files
from flux_server.experiments.feedback import FeedbackStore, RequestNotFound
from flux_server.experiments.runtime import ExperimentRuntime
from flux_server.metrics import Metrics
from flux_server.requests.presets_store import PresetStore

PRESETS = {
    "realistic": StylePreset(prompt_template="{prompt}, photorealistic"),
    "impressionist": StylePreset(prompt_template="{prompt}, impressionist painting"),
    "水墨": StylePreset(prompt_template="{prompt}, 水墨画, ink wash"),
}


def write_dir(directory: Path, weights: tuple[int, int, int], mtime: int) -> None:
    experiment: dict[str, Any] = {
        "name": "impressionist-filter",
        "preset": "realistic",
        "arms": [
            {"name": "control", "preset": "realistic", "weight": weights[0]},
            {"name": "impressionist", "preset": "impressionist", "weight": weights[1]},
            {"name": "ink", "preset": "水墨", "weight": weights[2]},
        ],
    }
    files = presets_to_files(PRESETS)
    files[EXPERIMENTS_FILE] = json.dumps({"experiments": [experiment]}, ensure_ascii=False)
    for name, content in files.items():
        (directory / name).write_text(content, "utf-8")
        os.utime(directory / name, ns=(mtime, mtime))


def replica(directory: Path, redis_url: str | None = None) -> ExperimentRuntime:
    return ExperimentRuntime(
        PresetStore(directory, interval=0).experiments, FeedbackStore(redis_url), Metrics()
    )


async def test_feedback_counts_to_the_arm_across_replicas(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    write_dir(tmp_path, (50, 30, 20), 1_000)
    a, b = replica(tmp_path, redis_server.url), replica(tmp_path, redis_server.url)
    try:
        arms = {}
        for i in range(40):
            got = a.assign("realistic", None, {"X-User-Id": f"user-{i}"})
            assert got is not None
            assert b.assign("realistic", None, {"X-User-Id": f"user-{i}"}) == got  # sticky
            arms[f"req-{i}"] = got.arm
            await a.served(f"req-{i}", got, seconds=0.5, gpu_seconds=0.25, images=1)
        for request_id in arms:
            outcome = await b.feedback(request_id, "like")  # reaches the other replica
            assert outcome.counted and outcome.record.arm == arms[request_id]
        with pytest.raises(RequestNotFound):
            await b.feedback("never-served", "like")
        served = {arm.name: arm for arm in a.counts().experiments[0].arms}
        liked = {arm.name: arm for arm in b.counts().experiments[0].arms}
        for name in ("control", "impressionist", "ink"):
            expected = sum(1 for arm in arms.values() if arm == name)
            assert served[name].requests == expected and served[name].images == expected
            assert liked[name].events.get("like", 0) == expected
            assert liked[name].requests == 0  # b served none itself
    finally:
        await a.feedback_store.close()
        await b.feedback_store.close()


def test_reloaded_weights_reach_assignment_and_metrics(tmp_path: Path) -> None:
    write_dir(tmp_path, (50, 30, 20), 1_000)
    runtime = replica(tmp_path)
    assert [a.weight for a in runtime.counts().experiments[0].arms] == [50, 30, 20]
    write_dir(tmp_path, (0, 100, 0), 2_000)
    got = runtime.assign("realistic", None, {"X-User-Id": "anyone"})
    assert got is not None and got.arm == "impressionist"
    assert [a.weight for a in runtime.counts().experiments[0].arms] == [0, 100, 0]
    text = runtime.metrics.render().decode()
    assert 'weight="100"' in text and 'weight="50"' not in text

"""What the tests against real servers share: the presets directory the operator renders
for the example FluxDeployment (the issue's experiment), and a generation request as a
user of a customer group sends it."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from flux_client.experiments import EXPERIMENTS_FILE
from flux_operator.render import Owner, render_all
from flux_operator.spec import FluxDeployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "operator" / "examples" / "good" / "ab-experiment.yaml"
OWNER = Owner(name="flux-styles", namespace="studio", uid="6f1c0a52-0000-4000-8000-0000000000ab")
EXPERIMENT = "impressionist-filter"
# Cheap generations: the tiny model at its smallest, one step; a fixed prompt and seed so
# that each arm's resolved request is computed once and then served from the cache.
BODY: dict[str, Any] = {
    "prompt": "a lighthouse",
    "style_preset": "realistic",
    "seed": 7,
    "width": 64,
    "height": 64,
    "steps": 1,
}

T = TypeVar("T")


def render_presets(directory: Path) -> dict[str, str]:
    """Write the presets ConfigMap the operator renders for the example FluxDeployment
    into ``directory`` (as kubelet mounts its keys) and return its data."""
    spec = FluxDeployment.model_validate(yaml.safe_load(EXAMPLE.read_text("utf-8"))).spec
    (config_map,) = [o for o in render_all(OWNER, spec) if "-presets-" in o["metadata"]["name"]]
    data: dict[str, str] = config_map["data"]
    directory.mkdir(parents=True, exist_ok=True)
    for key, content in data.items():
        (directory / key).write_text(content, "utf-8")
    return data


def set_weights(directory: Path, weights: list[int]) -> None:
    """Change the arms' weights in the mounted experiments file, as a new revision would."""
    path = directory / EXPERIMENTS_FILE
    document = json.loads(path.read_text("utf-8"))
    for arm, weight in zip(document["experiments"][0]["arms"], weights, strict=True):
        arm["weight"] = weight
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
    staged.replace(path)  # a new inode, as kubelet's swap gives


def generate(
    client: httpx.Client, user: str | None, group: str | None = "beta", **body: Any
) -> httpx.Response:
    headers = {"Accept": "application/json"}
    if user is not None:
        headers["X-User-Id"] = user
    if group is not None:
        headers["X-Customer-Group"] = group
    response = client.post("/generate", json={**BODY, **body}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def likes(user: str, arm: str, rates: dict[str, int]) -> bool:
    """Whether a simulated user likes the image: a fixed draw per user at the arm's rate
    (percent), so the test is the same on every run."""
    draw = int.from_bytes(hashlib.sha256(user.encode()).digest()[:4], "big") % 100
    return draw < rates[arm]


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")

"""Training the tiny random FLUX on 24 posters, for real: the validation loss falls
below the base model's, the run reports itself, the adapter records its training and
loads in a real ``python -m flux_server --lora``, and a run killed after a checkpoint
resumes to the same weights, byte for byte."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from server_process import ServerProcess, start_server

from flux_trainer.hashing import dataset_sha256, file_sha256

from .conftest import log_events, result_of, run_trainer, trainer_command, trainer_env

pytestmark = pytest.mark.slow

STEPS = 200
EVERY = 50
# The CLI contract's flags, small: 64 px posters, one thread (see trainer_env), no
# gradient checkpointing (nothing to save on a tiny model), a learning rate a tiny model
# moves at in a few hundred steps, 2-step contact sheets.
FLAGS = [
    "--steps", str(STEPS), "--resolution", "64", "--rank", "16", "--seed", "0",
    "--learning-rate", "1e-3", "--checkpoint-every", str(EVERY), "--keep-checkpoints", "2",
    "--sample-steps", "2", "--max-sequence-length", "32", "--no-gradient-checkpointing",
]  # fmt: skip


@dataclass
class Trained:
    output: Path
    result: dict[str, Any]
    events: list[dict[str, Any]]
    result_file: Path

    @property
    def adapter(self) -> Path:
        return Path(self.result["adapter"])


def _args(model: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--base", str(model), "--dataset", str(data), "--output", str(output),
            *FLAGS, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_flux: Path, posters: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One uninterrupted run, shared by the tests below."""
    root = tmp_path_factory.mktemp("trained")
    result_file = root / "termination-log"
    proc = run_trainer(
        _args(tiny_flux, posters, root / "out", "--result-file", str(result_file)), timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Trained(root / "out", result_of(proc), log_events(proc.stderr), result_file)


def test_the_validation_loss_falls_below_the_base_models(trained: Trained) -> None:
    metrics = trained.result["metrics"]
    assert metrics["final_validation_loss"] < metrics["base_validation_loss"]
    on_disk = json.loads((trained.output / "metrics.json").read_text())
    assert {k: on_disk[k] for k in metrics} == metrics
    assert [v["step"] for v in on_disk["validation"]] == [50, 100, 150, 200]
    assert metrics["steps"] == STEPS and metrics["seconds"] > 0 and metrics["peak_memory_gb"] > 0
    assert 0 < on_disk["trainable_share"] < 1 and on_disk["trainable_parameters"] > 0


def test_the_run_reports_each_step_and_checkpoint(trained: Trained) -> None:
    steps = [e for e in trained.events if e.get("event") == "step"]
    assert [e["step"] for e in steps] == list(range(1, STEPS + 1))
    assert all(e["steps"] == STEPS and e["loss"] > 0 and e["eta_s"] >= 0 for e in steps)
    assert steps[-1]["eta_s"] == 0
    checkpoints = [e for e in trained.events if e.get("event") == "checkpoint"]
    assert [e["step"] for e in checkpoints] == [50, 100, 150, 200]
    base = [e for e in trained.events if e.get("event") == "validation"]
    assert base[0]["step"] == 0
    assert base[0]["validation_loss"] == trained.result["metrics"]["base_validation_loss"]
    # One contact sheet per checkpoint and one of the base model: 4 validation prompts
    # (rows) by 2 seeds (columns) of 64 px, under a label.
    sheets = sorted(p.name for p in (trained.output / "samples").iterdir())
    assert sheets == [f"step-{s:06d}.png" for s in (0, 50, 100, 150, 200)]
    with Image.open(trained.output / "samples" / "step-000200.png") as sheet:
        assert sheet.size == (2 * 64, 4 * 64 + 14)
    kept = sorted(p.name for p in (trained.output / "checkpoints").iterdir())
    assert kept == ["step-000150", "step-000200"]


def test_the_result_is_the_termination_message(trained: Trained, posters: Path) -> None:
    written = json.loads(trained.result_file.read_text())
    assert written == trained.result
    assert set(written) == {
        "status", "adapter", "adapter_uri", "sha256", "dataset_sha256", "trainer_version",
        "metrics",
    }  # fmt: skip
    assert written["status"] == "succeeded" and written["adapter_uri"] is None
    assert trained.adapter == trained.output / "pytorch_lora_weights.safetensors"
    assert written["sha256"] == file_sha256(trained.adapter)
    assert written["dataset_sha256"] == dataset_sha256(posters)


def test_inspect_prints_what_the_adapter_records(
    trained: Trained, tiny_flux: Path, posters: Path
) -> None:
    proc = run_trainer(["inspect", str(trained.adapter), "--json"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    training = info["training"]
    assert training["base_model"] == str(tiny_flux) and training["base_revision"] == "unpinned"
    assert training["rank"] == 16 and training["lora_alpha"] == 16
    assert training["dataset_sha256"] == dataset_sha256(posters)
    assert training["trainer_version"] == trained.result["trainer_version"]
    metrics = trained.result["metrics"]
    assert training["base_validation_loss"] == metrics["base_validation_loss"]
    assert training["final_validation_loss"] == metrics["final_validation_loss"]
    assert info["sha256"] == trained.result["sha256"]
    assert "lora_adapter_metadata" in info["other_metadata"]  # diffusers' own entry
    text = run_trainer(["inspect", str(trained.output)], timeout=60).stdout
    assert f"dataset_sha256: {dataset_sha256(posters)}" in text


@pytest.fixture
def servers(tiny_flux: Path, trained: Trained, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """The base model served as is, and with the adapter as ``brand``."""
    # One thread each, as the trainer (see trainer_env): two servers load side by side.
    one_thread = {"OMP_NUM_THREADS": "1"}
    started = [
        start_server(tiny_flux, tmp_path, env_overrides=one_thread),
        start_server(
            tiny_flux, tmp_path, ["--lora", f"brand={trained.adapter}"], env_overrides=one_thread
        ),
    ]
    try:
        for server in started:
            server.wait_ready(300)
        yield started
    finally:
        for server in started:
            server.stop()


def _image(server: ServerProcess, adapters: list[dict[str, Any]]) -> np.ndarray:
    body = {"prompt": "a poster of a blue circle", "width": 64, "height": 64, "steps": 2,
            "seed": 3, "adapters": adapters}  # fmt: skip
    response = httpx.post(f"{server.url}/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def test_the_server_serves_the_adapter(servers: list[ServerProcess]) -> None:
    base, with_adapter = servers
    before = _image(base, [])
    assert np.array_equal(_image(with_adapter, []), before), "not requested: the base image"
    branded = _image(with_adapter, [{"name": "brand"}])
    assert not np.array_equal(branded, before), "requested: the adapter changes the image"


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended (exit {process.returncode}) first"
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.02)


def test_a_killed_run_resumes_to_the_same_weights(
    trained: Trained, tiny_flux: Path, posters: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    args = _args(tiny_flux, posters, output, "--resume")
    process = subprocess.Popen(
        trainer_command(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=trainer_env(),
        text=True,
    )
    try:
        _wait_for(output / "checkpoints" / f"step-{EVERY:06d}" / "state.json", process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (output / "pytorch_lora_weights.safetensors").exists()
    proc = run_trainer(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = [e for e in log_events(proc.stderr) if e.get("event") == "resumed"]
    assert resumed and resumed[0]["step"] >= EVERY
    result = result_of(proc)
    # Equal weights and an equal record: the same file.
    assert result["sha256"] == trained.result["sha256"]
    assert (
        result["metrics"]["final_validation_loss"]
        == (trained.result["metrics"]["final_validation_loss"])
    )


def test_a_finished_output_is_neither_overwritten_nor_resumed_with_other_settings(
    trained: Trained, tiny_flux: Path, posters: Path
) -> None:
    again = run_trainer(_args(tiny_flux, posters, trained.output), timeout=300)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "holds checkpoints of an earlier run (step-000200): pass --resume" in str(
        result_of(again)["message"]
    )
    other = run_trainer(
        [*_args(tiny_flux, posters, trained.output), "--resume", "--learning-rate", "5e-4"],
        timeout=300,
    )
    assert other.returncode == 5, other.stderr[-3000:]
    assert "learning_rate: 0.001 -> 0.0005" in str(result_of(other)["message"])

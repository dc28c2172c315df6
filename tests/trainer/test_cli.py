"""The command line: every setting is a flag with the model's bounds, a bad value is
refused by name before anything loads, and the result is one compact JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_trainer.cli import build_parser, config_from, flag
from flux_trainer.config import DEFAULT_TARGET_MODULES, TrainConfig
from flux_trainer.errors import ConfigError
from flux_trainer.report import RESULT_LIMIT, encode_result, failure

from .conftest import log_events, result_of, run_trainer

REQUIRED = ["--base", "model", "--dataset", "data", "--output", "out"]


def _config(*extra: str) -> TrainConfig:
    return config_from(build_parser().parse_args(["train", *REQUIRED, *extra]))


def test_every_setting_is_a_flag() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for name in TrainConfig.model_fields:
        assert flag(name) in text, name
    assert "--no-gradient-checkpointing" in text and "--result-file" in text


def test_defaults_follow_the_recipe() -> None:
    config = _config()
    assert (config.rank, config.alpha, config.learning_rate) == (16, 16, 1e-4)
    assert tuple(config.target_modules) == DEFAULT_TARGET_MODULES
    assert config.gradient_checkpointing and config.mixed_precision == "auto"


def test_flags_reach_the_config() -> None:
    config = _config(
        "--steps", "300", "--resolution", "1024", "--rank", "32", "--seed", "7",
        "--learning-rate", "2e-4", "--batch-size", "2", "--checkpoint-every", "50",
        "--validation-prompts", "a red poster", "a blue poster", "--validation-seeds", "3",
        "--target-modules", "to_q", "to_v", "--qlora", "--no-gradient-checkpointing",
        "--mixed-precision", "bf16", "--resume",
    )  # fmt: skip
    assert config.steps == 300 and config.resolution == 1024 and config.rank == 32
    assert config.seed == 7 and config.learning_rate == 2e-4 and config.batch_size == 2
    assert config.validation_prompts == ["a red poster", "a blue poster"]
    assert config.validation_seeds == [3] and config.target_modules == ["to_q", "to_v"]
    assert config.qlora and not config.gradient_checkpointing and config.resume


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank", "0"], "--rank: Input should be greater than or equal to 1"),
        (["--rank", "300"], "--rank: Input should be less than or equal to 256"),
        (["--resolution", "72"], "--resolution: Value error, 72 is not a multiple of 16"),
        (["--learning-rate", "0"], "--learning-rate: Input should be greater than 0"),
        (["--target-modules", "to_q", "to_q"], "--target-modules: Value error, a module is"),
        (["--validation-seeds", "-1"], "--validation-seeds: Input should be greater than"),
    ],
)
def test_bad_values_are_refused_by_flag(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(*args)
    assert message in str(info.value)


def test_a_refused_flag_exits_2_with_a_result(tmp_path: Path) -> None:
    result_file = tmp_path / "termination-log"
    proc = run_trainer(
        ["train", *REQUIRED, "--steps", "0", "--result-file", str(result_file)], timeout=120
    )
    assert proc.returncode == 2
    written = json.loads(result_file.read_text())
    assert written == result_of(proc)
    assert written["status"] == "failed" and written["error"] == "config"
    assert written["message"] == "--steps: Input should be greater than or equal to 1"


def test_a_bad_dataset_fails_before_any_model_loads(posters: Path, tmp_path: Path) -> None:
    data = Path(__import__("shutil").copytree(posters, tmp_path / "data"))
    (data / "images" / "poster-002.png").write_bytes(b"\x89PNG broken")
    proc = run_trainer(
        ["train", "--base", str(tmp_path / "no-model"), "--dataset", str(data),
         "--output", str(tmp_path / "out"), "--resolution", "64"],
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-2000:]
    result = result_of(proc)
    assert result["error"] == "dataset"
    assert "images/poster-002.png (metadata.jsonl line 3): unreadable image" in str(
        result["message"]
    )
    # The base model does not exist: it was never looked at.
    assert not any(e.get("event") == "ready" for e in log_events(proc.stderr))


def test_the_result_fits_a_termination_message() -> None:
    long = failure("dataset", "x" * 10_000, 3)
    text = encode_result(long)
    assert len(text.encode()) <= RESULT_LIMIT
    decoded = json.loads(text)
    assert decoded["message"].endswith("...") and decoded["exit_code"] == 3


def test_inspect_refuses_a_file_that_is_not_safetensors(tmp_path: Path) -> None:
    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"\x01")
    proc = run_trainer(["inspect", str(bogus)], timeout=60)
    assert proc.returncode == 1
    assert "not a readable safetensors file" in proc.stderr

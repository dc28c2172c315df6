"""``make bench-train`` (bench/train_bench.py): it says why it skips on a CPU, and runs
the trainer's own steps end to end with ``--tiny``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import trainer_env

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "train_bench.py"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        env=trainer_env(),
        timeout=600,
        check=False,
    )


def test_on_a_cpu_it_skips_with_a_reason() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the bench would run")
    proc = _bench()
    assert proc.returncode == 0, proc.stderr
    assert "train_bench: skipped: no CUDA device" in proc.stdout
    assert "--tiny" in proc.stdout


@pytest.mark.slow
def test_tiny_runs_the_trainers_steps(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench("--tiny", "--sizes", "64", "--steps", "2", "--warmup", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "qlora: skipped with --tiny" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["size"], r["error"]) for r in rows] == [("fp32", 64, None)]
    assert rows[0]["s_per_step"] > 0 and rows[0]["optimizer"] == "adamw"
    # Minutes are printed to 0.1: equal to the step time's within that rounding.
    minutes = rows[0]["s_per_step"] * 1000 / 60
    assert rows[0]["minutes_per_1000"] == pytest.approx(minutes, abs=0.05 + 1e-3 * minutes)

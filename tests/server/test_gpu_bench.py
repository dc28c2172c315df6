"""``make bench-gpu`` (bench/gpu_bench.py, gpu_pipeline.py, flux_shapes.py): its FLOP count on
FLUX.1-dev's real shapes, its GPU table, and a run end to end on the CPU with the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import flux_shapes  # noqa: E402


def test_flops_and_parameters_of_the_flux_dev_transformer() -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):  # shapes only, no memory
        transformer = FluxTransformer2DModel(**flux_shapes.FLUX_DEV_TRANSFORMER)
    params = sum(p.numel() for p in transformer.parameters())
    assert 11.8e9 < params < 12.0e9  # FLUX.1-dev: 11.9B
    # About 74 TFLOP per step at 1024x1024 (4096 image + 512 text tokens).
    flops = flux_shapes.transformer_flops(transformer, 1024, 1024)
    assert 73e12 < flops < 76e12


def test_gpu_peaks_match_the_most_specific_name() -> None:
    assert flux_shapes.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flux_shapes.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert flux_shapes.peak_tflops("NVIDIA L40S") == 362.0
    assert flux_shapes.peak_tflops("Some Future GPU") is None


def test_help_explains_the_gpu_run() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu_bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for needed in ("1024x1024", "28 steps", "--tiny", "--peak-tflops", "--out"):
        assert needed in result.stdout


@pytest.mark.slow
def test_the_bench_runs_end_to_end_on_a_cpu_with_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "bench/gpu_bench.py"), "--tiny", "--out", str(out)]
    result = subprocess.run(
        [*command, "--only", "eager", "compile-regional", "--batches", "1", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    payload = json.loads(out.read_text())
    rows = {(r["variant"], r["batch"]): r for r in payload["results"]}
    assert set(rows) == {
        ("eager", 1),
        ("eager", 2),
        ("compile-regional", 1),
        ("compile-regional", 2),
    }
    assert all(r["error"] is None and r["seconds_per_image"] > 0 for r in rows.values())
    # Switching LoRA adapters (two ranks, hot-swapped) builds no graph.
    assert rows[("compile-regional", 1)]["recompiles_lora_switch"] == 0
    assert "compile-regional" in result.stdout

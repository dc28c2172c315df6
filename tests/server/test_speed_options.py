"""The speed options on a real server with the tiny model (CPU): each serves; compiled
output equals eager; no compilation after ready across the warm-up sizes, batch sizes
and two LoRA adapters of different ranks (dynamo's own counter, on /metrics); bad
values stop the server at start in one line.

Compiled servers use ``--compile-backend aot_eager``: dynamo traces and guards exactly as
with inductor (so recompiles are counted the same) without minutes of C++ code
generation on a CPU; ``make bench`` runs inductor.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from flux_server.settings import SettingsError, load_settings

# Compiled (aot_eager) against eager, after PNG quantisation: at most one level of 255
# in a value (a rounding boundary), and in under 1% of values.
MAX_LEVEL_DIFF = 1
MAX_DIFF_FRACTION = 0.01
SIZES = ((64, 64), (96, 64))


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from diffusers import FluxPipeline

    from flux_server.execution.lora import write_tiny_lora

    pipe = FluxPipeline.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    root = tmp_path_factory.mktemp("loras")
    return {
        "ink": write_tiny_lora(pipe, root / "ink", "ink", rank=4, seed=1),
        "neon": write_tiny_lora(pipe, root / "neon", "neon", rank=8, seed=2),
    }


def _images(server: Any, width: int, height: int, n: int, adapter: str | None) -> list[Any]:
    body: dict[str, Any] = {
        "prompt": "a lighthouse",
        "width": width,
        "height": height,
        "steps": 2,
        "seed": 7,
        "num_images": n,
    }
    if adapter:
        body["adapters"] = [{"name": adapter, "scale": 0.8}]
    response = httpx.post(
        f"{server.url}/generate",
        json=body,
        headers={"Accept": "application/json"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(image["b64"]))).convert("RGB"))
        for image in response.json()["images"]
    ]


def _metric(server: Any, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.slow
def test_compiled_serving_equals_eager_with_no_recompile_after_ready(
    server_factory: Any, tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    loras = [arg for name, path in adapters.items() for arg in ("--lora", f"{name}={path}")]
    common = ["--max-batch-size", "2", "--cache-bytes", "0", *loras]
    eager = server_factory(tiny_model_dir, [*common, "--compile", "off"], wait=False)
    compiled = server_factory(
        tiny_model_dir,
        [
            *common,
            "--compile",
            "regional",
            "--compile-backend",
            "aot_eager",
            "--warmup-sizes",
            ",".join(f"{w}x{h}" for w, h in SIZES),
        ],
        wait=False,
    )
    eager.wait_ready(600)
    compiled.wait_ready(600)
    assert _metric(compiled, "fluxserve_recompiles_total") == 0
    # Sizes, batch sizes and adapter switches (none → ink → neon → none), each a case
    # the warm-up must have covered.
    for width, height in SIZES:
        for n in (1, 2):
            for adapter in (None, "ink", "neon", None):
                got = _images(compiled, width, height, n, adapter)
                want = _images(eager, width, height, n, adapter)
                for a, b in zip(got, want, strict=True):
                    diff = np.abs(a.astype(int) - b.astype(int))
                    assert diff.max() <= MAX_LEVEL_DIFF, (width, height, n, adapter)
                    assert (diff > 0).mean() <= MAX_DIFF_FRACTION, (width, height, n, adapter)
    assert _metric(compiled, "fluxserve_recompiles_total") == 0
    # Two warm-up sizes leave shape-dynamic graphs: a size outside them compiles nothing.
    _images(compiled, 128, 128, 1, None)
    assert _metric(compiled, "fluxserve_recompiles_total") == 0
    # One hot-swap slot of rank 8 (the largest adapter's): ink (4) and neon (8) fused
    # need 12, a 422 before the queue naming the rank to start with (eager combines them).
    both = {
        "prompt": "a lighthouse",
        "width": 64,
        "height": 64,
        "steps": 2,
        "adapters": [{"name": "ink"}, {"name": "neon"}],
    }
    assert httpx.post(f"{eager.url}/generate", json=both, timeout=300).status_code == 200
    refused = httpx.post(f"{compiled.url}/generate", json=both, timeout=300)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "adapters"
    assert "--lora-max-rank 12" in error["message"]


def test_the_recompile_counter_reads_dynamo() -> None:
    import torch

    from flux_server.execution import speedups
    from flux_server.metrics import Metrics

    @torch.compile(backend="eager", dynamic=False)
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    double(torch.ones(3))
    speedups.mark_ready()
    double(torch.ones(3))
    assert speedups.recompiles_since_ready() == 0
    double(torch.ones(5))  # a new static shape: one more graph
    assert speedups.recompiles_since_ready() == 1
    exposed = Metrics().render().decode()
    assert "fluxserve_recompiles_total 1.0" in exposed


@pytest.mark.slow
def test_quantize_step_cache_attention_and_vae_options_serve(
    server_factory: Any, tiny_model_dir: Path
) -> None:
    server = server_factory(
        tiny_model_dir,
        [
            "--quantize",
            "int8",
            "--step-cache",
            "first-block:0.2",
            "--attention-backend",
            "_native_math",
            "--vae-slicing",
            "--vae-tiling",
            "--cache-bytes",
            "0",
        ],
        wait=False,
    )
    taylor = server_factory(
        tiny_model_dir, ["--step-cache", "taylorseer:2", "--cache-bytes", "0"], wait=False
    )
    server.wait_ready(600)
    taylor.wait_ready(600)
    for s in (server, taylor):
        first = _images(s, 64, 64, 2, None)
        again = _images(s, 64, 64, 2, None)
        # A step cache decides per call from the batch's own numbers: repeatable.
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compile", "fast"], "--compile"),
        (["--warmup-sizes", "1024x1000"], "multiples of 16"),
        (["--warmup-sizes", "big"], "is not WIDTHxHEIGHT"),
        (["--warmup-sizes", "4096x4096"], "over --max-side 2048"),
        (["--quantize", "int4"], "--quantize"),
        (["--quantize", "fp8", "--device", "cpu"], "--quantize fp8 needs a CUDA GPU"),
        (["--step-cache", "first-block:2"], "first-block:THRESHOLD"),
        (["--step-cache", "magic"], "is not a step cache"),
        (["--attention-backend", "warp", "--device", "cpu"], "available: native"),
        (["--attention-backend", "flash", "--device", "cpu"], "unknown or unusable on cpu"),
        (["--offload", "model", "--device", "cpu"], "--offload model"),
        (["--lora-max-rank", "0"], "--lora-max-rank"),
    ],
)
def test_bad_speed_values_are_refused_naming_the_flag(args: list[str], message: str) -> None:
    try:
        load_settings(["--model", "m", *args], {})
    except SettingsError as exc:
        assert message in str(exc) and "\n" not in str(exc)
    except SystemExit:
        # argparse refuses a value outside the choices itself (one usage line + error).
        assert message in ("--compile", "--quantize")
    else:
        raise AssertionError(f"{args} was accepted")


def test_speed_values_come_from_the_environment_too() -> None:
    settings = load_settings(
        ["--model", "m"],
        {
            "FLUXSERVE_COMPILE": "full",
            "FLUXSERVE_WARMUP_SIZES": "1024x1024,768x1344",
            "FLUXSERVE_STEP_CACHE": "first-block:0.08",
            "FLUXSERVE_QUANTIZE": "int8",
        },
    )
    assert settings.compile == "full" and settings.quantize == "int8"
    assert settings.warmup_sizes == ("1024x1024", "768x1344")
    assert settings.step_cache == "first-block:0.08"


def test_a_bad_value_stops_the_process_with_one_line(tiny_model_dir: Path) -> None:
    command = [sys.executable, "-m", "flux_server", "--model", str(tiny_model_dir)]
    result = subprocess.run(
        [*command, "--step-cache", "first-block:7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--step-cache" in lines[0], result.stderr


@pytest.mark.slow
def test_an_adapter_over_the_prepared_rank_is_refused_with_the_rank_needed(
    server_factory: Any, tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    server = server_factory(
        tiny_model_dir,
        [
            "--compile",
            "regional",
            "--compile-backend",
            "eager",
            "--lora-max-rank",
            "4",
            "--lora",
            f"ink={adapters['ink']}",
            "--lora",
            f"neon={adapters['neon']}",
        ],
        wait=False,
    )
    assert server.process.wait(300) != 0
    assert "adapter 'neon' has rank 8" in server.log()
    assert "--lora-max-rank 8 or more" in server.log()

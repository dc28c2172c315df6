"""The engine on the tiny model: seeds, batching of jobs, true CFG; and the formats its
pictures are encoded in."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flux_server.execution.engine import Engine, choose_dtype
from flux_server.execution.inputs import TextToImage
from flux_server.requests.results import GeneratedImage


def job(**overrides: Any) -> TextToImage:
    values: dict[str, Any] = dict(
        prompt="a futuristic city", width=64, height=32, steps=2, guidance_scale=3.5, seed=11
    )
    values.update(overrides)
    return TextToImage(**values)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir), device="cpu")


def test_cpu_defaults_to_float32(engine: Engine) -> None:
    import torch

    assert engine.info.device == "cpu"
    assert engine.info.dtype == "float32"
    assert choose_dtype("bfloat16", "cpu") is torch.bfloat16


def test_same_seed_same_bytes_and_seed_per_image(engine: Engine) -> None:
    [[a]] = engine.generate([job()])
    [[b]] = engine.generate([job()])
    assert a.image.tobytes() == b.image.tobytes()
    assert (a.image.width, a.image.height, a.seed) == (64, 32, 11)
    [[c]] = engine.generate([job(seed=12)])
    assert c.image.tobytes() != a.image.tobytes()
    # Image i of a request uses seed + i: image 1 of seed 11 is image 0 of seed 12.
    [[d0, d1]] = engine.generate([job(num_images=2)])
    assert [d0.seed, d1.seed] == [11, 12]
    # Across batch sizes, one level of 255 at most (see test_determinism.py).
    first, second = (x.image.convert("RGB").tobytes() for x in (a, d0))
    assert max(abs(p - q) for p, q in zip(first, second, strict=True)) <= 1


def test_several_jobs_in_one_call_keep_their_order(engine: Engine) -> None:
    results = engine.generate([job(prompt="one", seed=1), job(prompt="two", seed=2, num_images=2)])
    assert [len(images) for images in results] == [1, 2]
    assert [image.seed for image in results[1]] == [2, 3]


def test_incompatible_jobs_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="share"):
        engine.generate([job(), job(width=128)])


def test_negative_prompt_runs_true_cfg_and_reports_progress(engine: Engine) -> None:
    steps: list[tuple[int, int]] = []
    [[plain]] = engine.generate([job()])
    [[guided]] = engine.generate(
        [job(negative_prompt="blurry", true_cfg_scale=4.0)],
        progress=lambda s, t: steps.append((s, t)),
    )
    assert guided.image.tobytes() != plain.image.tobytes()
    assert steps == [(1, 2), (2, 2)]


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_formats(engine: Engine, fmt: str, pil: str) -> None:
    [[picture]] = engine.generate([job()])
    image = GeneratedImage.encoded(picture.image, fmt, picture.seed)
    assert Image.open(io.BytesIO(image.data)).format == pil
    assert (image.format, image.width, image.height, image.seed) == (fmt, 64, 32, 11)


def test_adapters_without_lora_support_fail(engine: Engine) -> None:
    with pytest.raises(ValueError, match="LoRA"):
        engine.generate([job(adapters=(("style", 1.0),))])


@pytest.mark.gpu
def test_cuda_takes_bfloat16_and_keeps_seeds_reproducible(tiny_model_dir: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    engine = Engine.load(str(tiny_model_dir), device="auto")
    assert engine.info.device == "cuda"
    assert engine.info.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    [[a]] = engine.generate([job(seed=5)])
    [[b]] = engine.generate([job(seed=5)])
    assert a.image.tobytes() == b.image.tobytes()

"""The trainer's pieces on their own: aspect buckets that never flip, batches that are
a function of (seed, epoch), LoRA targets that name what exists, and the flow-matching
loss drawn from one generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from flux_trainer import buckets
from flux_trainer.config import TrainConfig
from flux_trainer.errors import ConfigError
from flux_trainer.model import add_lora, target_pattern
from flux_trainer.posters import BRAND_TAG, poster


def test_buckets_keep_the_pixel_budget_and_the_grid() -> None:
    for resolution in (64, 512, 1024):
        sizes = buckets.bucket_sizes(resolution)
        assert (resolution, resolution) in sizes
        for width, height in sizes:
            assert width % 16 == 0 and height % 16 == 0
            assert 0.8 < width * height / resolution**2 < 1.2
    sizes = buckets.bucket_sizes(1024)
    assert buckets.nearest(600, 900, sizes) == (832, 1248)  # 2:3 portrait
    assert buckets.nearest(1920, 1080, sizes) == (1360, 768)  # 16:9


def test_a_poster_is_never_flipped(tmp_path: Path) -> None:
    path = tmp_path / "poster.png"
    poster(64, 80, "white", "blue", "circle").save(path)
    pixels = buckets.load_pixels(str(path), (64, 80))
    image = ((pixels.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    top_right, top_left = image[4, 58], image[4, 5]
    assert np.abs(top_right.astype(int) - BRAND_TAG).max() <= 8, "the tag stays top right"
    assert np.abs(top_left.astype(int) - BRAND_TAG).max() > 100


def test_transparency_is_laid_on_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(path)
    assert torch.allclose(buckets.load_pixels(str(path), (64, 64)), torch.ones(3, 64, 64))


def test_batches_hold_one_bucket_and_repeat_per_seed_and_epoch() -> None:
    sizes = [(64, 64), (48, 80)] * 5 + [(64, 64)]
    first = buckets.epoch_batches(sizes, 2, seed=1, epoch=0)
    assert first == buckets.epoch_batches(sizes, 2, seed=1, epoch=0)
    assert first != buckets.epoch_batches(sizes, 2, seed=1, epoch=1)
    assert sorted(i for batch in first for i in batch) == list(range(len(sizes)))
    assert all(len({sizes[i] for i in batch}) == 1 for batch in first)
    order = buckets.Batches(sizes, 2, seed=1)
    per_epoch = len(first)
    assert order.at(per_epoch + 1) == buckets.epoch_batches(sizes, 2, 1, 1)[1]
    assert order.at(0) == first[0]


@pytest.fixture(scope="module")
def pipe(tiny_flux: Path) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(tiny_flux)


def _config(**changes: Any) -> TrainConfig:
    return TrainConfig(base="m", dataset="d", output="o", rank=4, **changes)


def test_targets_cover_both_kinds_of_block_but_not_the_final_projection(pipe: Any) -> None:
    import copy
    import re

    pattern = re.compile(target_pattern(pipe.transformer, list(_config().target_modules)))
    names = [n for n, _ in pipe.transformer.named_modules()]
    matched = {n for n in names if pattern.fullmatch(n)}
    assert "transformer_blocks.0.attn.to_out.0" in matched
    assert "single_transformer_blocks.0.proj_mlp" in matched
    assert "single_transformer_blocks.0.proj_out" in matched
    assert "proj_out" not in matched  # the model's own output layer
    transformer = copy.deepcopy(pipe.transformer)
    params = add_lora(transformer, _config())
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    frozen = sum(p.numel() for p in transformer.parameters() if not p.requires_grad)
    assert sum(p.numel() for p in params) < frozen


def test_an_unknown_target_lists_the_ones_that_exist(pipe: Any) -> None:
    with pytest.raises(ConfigError) as info:
        target_pattern(pipe.transformer, ["to_q", "qkv"])
    message = str(info.value)
    assert "--target-modules: 'qkv' matches no Linear layer" in message
    assert "attn.to_q" in message and "proj_mlp" in message


def test_the_loss_is_a_function_of_the_generator_state(pipe: Any) -> None:
    from flux_trainer.encode import Cached, Prompt
    from flux_trainer.flow import training_loss

    config = _config(weighting_scheme="logit_normal")
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))
    prompt = Prompt(torch.randn(32, 32), torch.randn(32))
    batch = [Cached(latent, torch.full_like(latent, 0.1), prompt)] * 2  # a batch of two
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    with torch.no_grad():
        first = training_loss(
            pipe.transformer, batch, scheduler, pipe.vae.config, config, generator
        )
        second = training_loss(
            pipe.transformer, batch, scheduler, pipe.vae.config, config, generator
        )
        generator.set_state(state)
        again = training_loss(
            pipe.transformer, batch, scheduler, pipe.vae.config, config, generator
        )
    assert torch.equal(first, again) and not torch.equal(first, second)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_qlora_and_8bit_adam_say_what_they_need_on_a_cpu() -> None:
    from flux_trainer.errors import MissingDependencyError
    from flux_trainer.model import Placement, placement
    from flux_trainer.optim import make_optimizer

    with pytest.raises(MissingDependencyError) as info:
        placement(_config(qlora=True))
    assert "--qlora needs" in str(info.value)
    assert "bitsandbytes" in str(info.value) or "CUDA" in str(info.value)
    param = torch.nn.Parameter(torch.zeros(2))
    cpu = Placement(torch.device("cpu"), torch.float32)
    with pytest.raises(MissingDependencyError, match="--adam-8bit on needs the bitsandbytes"):
        make_optimizer([param], _config(adam_8bit="on"), cpu)
    assert make_optimizer([param], _config(), cpu)[1] == "adamw"  # auto: plain AdamW here

"""The preview decoders and hook on their own (no server): the unpacking matches the
pipeline's own, the linear projection's shape follows the VAE's channels (FLUX.1's
coefficients for 16), the hook's cadence, and a TAEF1-shaped ``AutoencoderTiny`` decodes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from flux_server.execution.previews import (
    FLUX1_LATENT_RGB,
    LinearDecoder,
    PreviewHook,
    PreviewImage,
    Taef1Decoder,
    projection,
    unpack,
)


def test_unpack_is_the_pipeline_s_own() -> None:
    from diffusers import FluxPipeline

    packed = torch.randn(2, (96 // 16) * (64 // 16), 16 * 4)
    ours = unpack(packed, 64, 96, 8)
    theirs = FluxPipeline._unpack_latents(packed, 96, 64, 8)
    assert torch.equal(ours, theirs)
    assert ours.shape == (2, 16, 12, 8)


@pytest.mark.parametrize("channels", [4, 16, 7])
def test_the_projection_has_the_vae_s_channels(channels: int) -> None:
    matrix, bias = projection(channels)
    assert len(matrix) == channels and all(len(row) == 3 for row in matrix)
    assert len(bias) == 3
    if channels == 16:
        assert matrix == [list(row) for row in FLUX1_LATENT_RGB]
    else:  # each colour an average of its channels: a flat latent gives a flat grey
        assert all(sum(row[c] for row in matrix) == pytest.approx(1.0) for c in range(3))


def test_linear_previews_are_the_latent_grid_s_size() -> None:
    decoder = LinearDecoder(16, 8)
    pixels = decoder(torch.zeros(1, 6 * 4, 64), 96, 64)
    assert pixels.shape == (1, 8, 12, 3) and str(pixels.dtype) == "uint8"


def test_the_hook_decodes_every_n_steps_but_the_last_for_the_rows_that_asked() -> None:
    heard: list[PreviewImage] = []
    rows: list[Any] = [None, (heard.append, 0), (heard.append, 1)]
    hook = PreviewHook(LinearDecoder(4, 8), 2, rows, 32, 48)
    latents = torch.randn(3, 2 * 3, 16)
    for step in range(1, 7):
        hook(step, 6, {"latents": latents})
    assert [(p.step, p.index) for p in heard] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    image = Image.open(io.BytesIO(heard[0].data))
    assert image.format == "WEBP" and image.size == (4, 6) == (heard[0].width, heard[0].height)
    assert PreviewImage.from_json(heard[0].to_json()) == heard[0]


def test_taef1_decodes_the_latents_it_is_given(tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tiny = AutoencoderTiny(
        latent_channels=4,
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    tiny.save_pretrained(tmp_path)
    decoder = Taef1Decoder(str(tmp_path), "cpu", torch.float32, 8)
    pixels = decoder(torch.randn(1, 2 * 3, 16), 48, 32)
    assert pixels.shape == (1, 32, 48, 3)

"""The tiny model loads through FluxPipeline.from_pretrained, like FLUX.1-dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline
from transformers import CLIPTokenizer, T5TokenizerFast

from flux_server.tools.tiny_model import main


def test_written_pipeline_loads_and_generates(tiny_model_dir: Path) -> None:
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    pipe = FluxPipeline.from_pretrained(tiny_model_dir)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.tokenizer_2, T5TokenizerFast)
    # Four VAE blocks: 8x spatial compression, as in FLUX.1-dev.
    assert pipe.vae_scale_factor == 8
    out = pipe(
        prompt="a futuristic city at sunset",
        width=64,
        height=48,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(7),
    )
    assert out.images[0].size == (64, 48)


def test_tokenizers_cover_any_text(tiny_model_dir: Path) -> None:
    pipe = FluxPipeline.from_pretrained(tiny_model_dir)
    text = "Ünïcode — 霓虹灯 city"
    assert pipe.tokenizer.decode(pipe.tokenizer(text).input_ids, skip_special_tokens=True)
    ids = pipe.tokenizer_2(text).input_ids
    assert ids[-1] == pipe.tokenizer_2.eos_token_id


def test_cli_requires_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "give DIR" in capsys.readouterr().err

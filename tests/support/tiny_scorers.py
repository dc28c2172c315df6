"""Tiny random scoring models for the quality gate, built locally and saved with
``save_pretrained``: a CLIP (the architecture of openai/clip-vit-base-patch32 at tiny
widths, with the byte-level CLIP tokenizer of the tiny FLUX) and a DINOv2. The gate loads
them by path through the code that loads the real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTHS: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
"""Every transformer here: two layers of 32 wide, four heads."""


def write_tiny_clip(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    from flux_server.tools.tiny_model import build_clip_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer()
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **WIDTHS,
    )
    vision = CLIPVisionConfig(image_size=32, patch_size=8, **WIDTHS)
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    CLIPModel(config).save_pretrained(out)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def write_tiny_dinov2(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        image_size=32,
        patch_size=8,
        # Wide random weights: at the default 0.02 every image embeds alike (cosine
        # 0.99); at 1.0 two unrelated images are ~0.6 apart, as with a trained DINOv2.
        initializer_range=1.0,
        **WIDTHS,
    )
    Dinov2Model(config).save_pretrained(out)
    BitImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(out)
    return out

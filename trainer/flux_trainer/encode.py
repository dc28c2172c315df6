"""Latents and text embeddings, computed once before the loop.

Every image is encoded by the VAE once (its latent distribution's mean and standard
deviation are kept, and each step samples from them as the script's ``--cache_latents``
does); every caption and contact-sheet prompt is encoded by CLIP and T5 once. The text
encoders are then dropped: the loop needs only the transformer (and the VAE, to decode
the contact sheets).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flux_trainer.buckets import Size, load_pixels
from flux_trainer.model import Placement

TEXT_BATCH = 8


@dataclass(frozen=True)
class Prompt:
    embeds: torch.Tensor  # (tokens, joint_attention_dim)
    pooled: torch.Tensor  # (pooled_projection_dim,)


@dataclass(frozen=True)
class Cached:
    """One training or validation example, ready for the transformer."""

    mean: torch.Tensor  # (channels, h, w) of the VAE's latent distribution
    std: torch.Tensor
    prompt: Prompt


@torch.no_grad()
def encode_prompts(
    pipe: Any, prompts: Sequence[str], where: Placement, tokens: int
) -> list[Prompt]:
    out: list[Prompt] = []
    for start in range(0, len(prompts), TEXT_BATCH):
        chunk = list(prompts[start : start + TEXT_BATCH])
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=chunk, prompt_2=None, device=where.device, max_sequence_length=tokens
        )
        out += [
            Prompt(e.to(where.dtype), p.to(where.dtype))
            for e, p in zip(embeds, pooled, strict=True)
        ]
    return out


@torch.no_grad()
def encode_images(
    pipe: Any, paths: Sequence[str], sizes: Sequence[Size], where: Placement
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, std) of each image's latent distribution, unscaled (the loop applies the
    VAE's shift and scaling factor after sampling, as the script does)."""
    out = []
    for path, size in zip(paths, sizes, strict=True):
        pixels = load_pixels(path, size).unsqueeze(0).to(where.device, pipe.vae.dtype)
        dist = pipe.vae.encode(pixels).latent_dist
        out.append((dist.mean[0].to(where.dtype), dist.std[0].to(where.dtype)))
    return out


def cache_examples(
    pipe: Any,
    paths: Sequence[str],
    captions: Sequence[str],
    sizes: Sequence[Size],
    where: Placement,
    tokens: int,
) -> list[Cached]:
    prompts = encode_prompts(pipe, captions, where, tokens)
    latents = encode_images(pipe, paths, sizes, where)
    return [Cached(mean, std, prompt) for (mean, std), prompt in zip(latents, prompts, strict=True)]


def drop_text_encoders(pipe: Any) -> None:
    """Free the text encoders' memory: every prompt is encoded already."""
    pipe.text_encoder = pipe.text_encoder_2 = None
    pipe.tokenizer = pipe.tokenizer_2 = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

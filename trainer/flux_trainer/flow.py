"""The flow-matching objective of FLUX, as diffusers' FLUX LoRA script computes it.

A latent ``x`` and noise ``n`` are mixed at ``sigma`` (``(1 - sigma) x + sigma n``), the
transformer predicts the velocity ``n - x``, and the loss is the mean squared error,
weighted by ``compute_loss_weighting_for_sd3``. Timesteps are drawn with
``compute_density_for_timestep_sampling`` and mapped to sigmas through the
``FlowMatchEulerDiscreteScheduler``'s own table; latents are packed into 2x2 patches
and given position ids by the pipeline's helpers (``_pack_latents``,
``_prepare_latent_image_ids``, ``_unpack_latents``).

Every random draw comes from one ``torch.Generator`` passed in: its state is part of a
checkpoint, so a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flux_trainer.config import TrainConfig
from flux_trainer.encode import Cached

VALIDATION_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Noise levels at which each validation image is scored: a fixed grid, so the loss of
the base model and of every checkpoint are measured on the same problems."""


def predict(
    transformer: Any,
    noisy: torch.Tensor,
    sigmas: torch.Tensor,
    batch: Sequence[Cached],
    guidance: float,
) -> torch.Tensor:
    """The transformer's velocity for ``noisy`` latents (B, C, h, w), unpacked to that shape."""
    from diffusers import FluxPipeline

    size, channels, height, width = noisy.shape
    device, dtype = noisy.device, noisy.dtype
    packed = FluxPipeline._pack_latents(noisy, size, channels, height, width)
    image_ids = FluxPipeline._prepare_latent_image_ids(size, height // 2, width // 2, device, dtype)
    embeds = torch.stack([c.prompt.embeds for c in batch])
    pooled = torch.stack([c.prompt.pooled for c in batch])
    text_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype)
    use_guidance = transformer.config.guidance_embeds
    out = transformer(
        hidden_states=packed,
        # The transformer scales timesteps by 1000 itself: it takes sigmas.
        timestep=sigmas.to(dtype),
        guidance=torch.full((size,), guidance, device=device, dtype=dtype)
        if use_guidance
        else None,
        pooled_projections=pooled,
        encoder_hidden_states=embeds,
        txt_ids=text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0]
    # _unpack_latents takes pixel sizes and the VAE's factor; any factor gives back
    # these latent sizes.
    factor = 8
    return FluxPipeline._unpack_latents(out, height * factor, width * factor, factor)


def _latents(
    batch: Sequence[Cached], vae_config: Any, generator: torch.Generator | None
) -> torch.Tensor:
    mean = torch.stack([c.mean for c in batch])
    if generator is None:
        sample = mean
    else:
        std = torch.stack([c.std for c in batch])
        sample = mean + std * _randn(mean, generator)
    return (sample - vae_config.shift_factor) * vae_config.scaling_factor


def _randn(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU generator, then moved: the same numbers on every device.
    return torch.randn(like.shape, generator=generator, dtype=torch.float32).to(
        like.device, like.dtype
    )


def training_loss(
    transformer: Any,
    batch: Sequence[Cached],
    scheduler: Any,
    vae_config: Any,
    config: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The loss of one batch, with its timesteps and noise drawn from ``generator``."""
    from diffusers.training_utils import (
        compute_density_for_timestep_sampling,
        compute_loss_weighting_for_sd3,
    )

    latents = _latents(batch, vae_config, generator)
    noise = _randn(latents, generator)
    u = compute_density_for_timestep_sampling(
        weighting_scheme=config.weighting_scheme,
        batch_size=len(batch),
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        mode_scale=config.mode_scale,
        generator=generator,
    )
    count = scheduler.config.num_train_timesteps
    indices = (u * count).long().clamp(max=count - 1)  # u may round to 1.0
    # The script looks each timestep up in the scheduler's table: the sigma at its index.
    sigmas = scheduler.sigmas[indices].to(latents.device, latents.dtype)
    sigmas = sigmas.view(-1, 1, 1, 1)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    pred = predict(transformer, noisy, sigmas.flatten(), batch, config.guidance_scale)
    weighting = compute_loss_weighting_for_sd3(
        weighting_scheme=config.weighting_scheme, sigmas=sigmas
    )
    target = noise - latents
    per_example = (
        (weighting.float() * (pred.float() - target.float()) ** 2).reshape(len(batch), -1).mean(1)
    )
    return per_example.mean()


@torch.no_grad()
def validation_loss(
    transformer: Any, examples: Sequence[Cached], vae_config: Any, config: TrainConfig
) -> float:
    """Mean squared velocity error over the held-out examples at fixed noise levels and
    fixed noise (the latent means, no sampling): comparable between checkpoints."""
    generator = torch.Generator().manual_seed(config.seed)
    total, count = 0.0, 0
    for example in examples:
        latents = _latents([example], vae_config, None)
        for sigma in VALIDATION_SIGMAS:
            noise = _randn(latents, generator)
            sigmas = torch.full((1,), sigma, device=latents.device, dtype=latents.dtype)
            noisy = (1.0 - sigma) * latents + sigma * noise
            pred = predict(transformer, noisy, sigmas, [example], config.guidance_scale)
            total += float(((pred.float() - (noise - latents).float()) ** 2).mean())
            count += 1
    return total / count

"""Write a FLUX pipeline with random weights: the real classes, tiny sizes.

``python -m flux_server.tiny_model DIR`` saves a ``FluxPipeline`` (transformer, VAE,
CLIP and T5 text encoders, both tokenizers, the flow-matching scheduler) with
``save_pretrained``, so ``FluxPipeline.from_pretrained(DIR)`` -- the code path that
loads FLUX.1-dev -- loads it. Nothing is downloaded: the tokenizers are built here
(a character-level byte BPE for CLIP, a Unigram model trained in a moment for T5).

The VAE has four blocks (scale factor 8), as FLUX.1-dev's does, so an image of
W x H pixels becomes (W/16) * (H/16) image tokens in the transformer, exactly as in
the real model; only the widths and depths are small.

``--size bench`` writes a larger random configuration in which the transformer's
compute dominates on a CPU (used by ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

# A small corpus is enough for the T5 Unigram model: the weights are random, so the
# tokenizer only has to be a real, deterministic T5 tokenizer.
_T5_CORPUS = [
    "a futuristic city at sunset, cyberpunk style, flying cars, neon lights",
    "blurry, low resolution, distorted faces",
    "a close-up of a silver briefcase on a wooden table, studio lighting",
    "a woman in a victorian dress sitting on the left, a steampunk cat on the right",
    "a glowing crystal ball floating in the middle of the room",
    "an impressionist painting of a garden with water lilies",
    "the quick brown fox jumps over the lazy dog 0123456789",
]


class TinyFluxConfig(BaseModel):
    """Widths and depths of a random FLUX pipeline."""

    layers: int = Field(default=1, ge=1, description="Double-stream (MMDiT) transformer blocks.")
    single_layers: int = Field(default=1, ge=1, description="Single-stream transformer blocks.")
    heads: int = Field(default=2, ge=1, description="Attention heads.")
    head_dim: int = Field(
        default=16, ge=8, description="Width of one head (multiple of 8 for RoPE)."
    )
    latent_channels: int = Field(
        default=4, ge=1, description="VAE latent channels (FLUX.1-dev: 16)."
    )
    vae_channels: int = Field(default=8, ge=4, description="Width of every VAE block.")
    text_dim: int = Field(default=32, ge=8, description="Width of both text encoders.")
    text_layers: int = Field(default=1, ge=1, description="Layers of each text encoder.")


SIZES: dict[str, TinyFluxConfig] = {
    "tiny": TinyFluxConfig(),
    # Big enough that the transformer's compute dominates a CPU run (about 5M
    # parameters, about 0.3 s per 256x256 image at 4 steps on two idle cores), small
    # enough to write in seconds.
    "bench": TinyFluxConfig(
        layers=2,
        single_layers=4,
        heads=4,
        head_dim=48,
        latent_channels=16,
        vae_channels=16,
        text_dim=64,
        text_layers=2,
    ),
}


def _rope_axes(head_dim: int) -> tuple[int, int, int]:
    # FLUX.1-dev splits its 128-wide heads 16/56/56 over (text index, row, column).
    quarter = head_dim // 8 * 2
    rest = head_dim - quarter
    row = rest // 2 // 2 * 2
    return (quarter, row, rest - row)


def build_clip_tokenizer() -> Any:
    """A CLIP tokenizer over the 256 byte-level symbols (no merges): every string
    tokenizes, the way CLIP's real BPE does, only into more pieces."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
        vocab[symbol + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_t5_tokenizer() -> Any:
    """A T5 tokenizer from a Unigram model trained on a few sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # an alias of T5Tokenizer in transformers 5

    trainer = trainers.UnigramTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz0123456789,.-'"),
        show_progress=False,
    )
    model = Tokenizer(models.Unigram())
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    model.train_from_iterator(_T5_CORPUS * 4, trainer=trainer)
    pieces = [(str(p), float(s)) for p, s in json.loads(model.to_str())["model"]["vocab"]]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def build_pipeline(config: TinyFluxConfig, seed: int = 0) -> Any:
    """A ``FluxPipeline`` with random weights drawn from ``seed`` (the parts are built in
    a fixed order: the same seed gives the same weights)."""
    import torch
    from diffusers import FluxPipeline

    torch.manual_seed(seed)
    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    text_encoder, text_encoder_2 = _text_encoders(config, len(clip_tokenizer), len(t5_tokenizer))
    transformer = _transformer(config)
    vae = _vae(config)
    return FluxPipeline(
        scheduler=_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def _text_encoders(config: TinyFluxConfig, clip_vocab: int, t5_vocab: int) -> tuple[Any, Any]:
    """CLIP's and T5's text encoders, in that order."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    text_heads = max(1, config.text_dim // 16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=clip_vocab,
            hidden_size=config.text_dim,
            intermediate_size=config.text_dim * 2,
            num_hidden_layers=config.text_layers,
            num_attention_heads=text_heads,
            max_position_embeddings=77,
            projection_dim=config.text_dim,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=t5_vocab,
            d_model=config.text_dim,
            d_kv=config.text_dim // text_heads,
            d_ff=config.text_dim * 2,
            num_layers=config.text_layers,
            num_heads=text_heads,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    return text_encoder, text_encoder_2


def _transformer(config: TinyFluxConfig) -> Any:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=config.latent_channels * 4,
        num_layers=config.layers,
        num_single_layers=config.single_layers,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.heads,
        joint_attention_dim=config.text_dim,
        pooled_projection_dim=config.text_dim,
        guidance_embeds=True,
        axes_dims_rope=_rope_axes(config.head_dim),
    )


def _vae(config: TinyFluxConfig) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(config.vae_channels,) * 4,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=min(4, config.vae_channels),
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )


def _scheduler() -> Any:
    """FLUX.1-dev's scheduler configuration (resolution-dependent shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def write_tiny_flux(out_dir: Path, size: Literal["tiny", "bench"] = "tiny", seed: int = 0) -> Path:
    """Save a random FLUX pipeline under ``out_dir`` and return the directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_pipeline(SIZES[size], seed=seed).save_pretrained(out_dir)
    return out_dir


def _quiet_hub_libraries() -> None:
    """No progress bars and no advice about optional packages (torchvision) on the
    command line: the output says what was written."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flux_server.tiny_model",
        description="Write a FLUX pipeline with random weights (no download).",
    )
    parser.add_argument("dir", type=Path, nargs="?", help="output directory of the FLUX pipeline")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--vqa",
        type=Path,
        default=None,
        metavar="VQA_DIR",
        help="also write a tiny random VQA model into VQA_DIR",
    )
    args = parser.parse_args(argv)
    if args.dir is None and args.vqa is None:
        parser.error("give DIR, --vqa VQA_DIR, or both")
    _quiet_hub_libraries()
    if args.dir is not None:
        out = write_tiny_flux(args.dir, size=args.size, seed=args.seed)
        print(f"wrote a random-weight FLUX pipeline ({args.size}) to {out}")
    if args.vqa is not None:
        from flux_server.tools.tiny_vqa import write_tiny_vqa

        write_tiny_vqa(args.vqa)
        print(f"wrote a random-weight VQA model to {args.vqa}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

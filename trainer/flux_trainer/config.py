"""What one training run is: every field is a ``train`` flag (``--learning-rate`` for
``learning_rate``) and, for the operator, a field of the training resource.

Pure pydantic, no torch: the bounds here are the ones the CLI enforces and the ones a
resource's schema can mirror. Defaults follow diffusers' FLUX LoRA recipe
(``examples/dreambooth/train_dreambooth_lora_flux.py`` and its README): AdamW at 1e-4,
weight decay 1e-4, gradient clipping at 1, uniform timestep sampling, guidance 1 while
training; the rank is 16 and the targets are the attention projections of both kinds of
block plus the single blocks' MLP projections.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "proj_mlp", "proj_out")
"""Linear layers LoRA adapts, by the end of their name inside the transformer's blocks:
the attention projections of the double-stream blocks (``to_out.0``) and of the single
blocks, whose output projection and MLP input are ``proj_out`` and ``proj_mlp``. Only
layers inside ``transformer_blocks`` and ``single_transformer_blocks`` are matched, so the
model's final ``proj_out`` stays as it is."""

MAX_SEED = 2**32 - 1
RESOLUTION_MULTIPLE = 16  # the VAE's factor 8 times FLUX's 2x2 latent packing

Prompt = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
ModuleName = Annotated[
    str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,99}$")
]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class TrainConfig(BaseModel):
    """One LoRA training run of a FLUX transformer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = Field(
        min_length=1,
        description="The FLUX pipeline to adapt: a local directory (save_pretrained "
        "layout) or a hub id such as black-forest-labs/FLUX.1-dev.",
    )
    revision: str | None = Field(
        default=None, min_length=1, description="Revision (commit or tag) of a hub --base."
    )
    dataset: str = Field(
        min_length=1,
        description="A folder or a .tar/.tar.gz/.zip archive in the imagefolder layout "
        "(images + metadata.jsonl), as a local path, s3://bucket/key (or another fsspec "
        "URL), or git+URL@REVISION[#subdirectory=DIR].",
    )
    output: str = Field(
        min_length=1,
        description="Output directory: pytorch_lora_weights.safetensors, metrics.json, "
        "samples/ (contact sheets), checkpoints/.",
    )
    steps: int = Field(default=1000, ge=1, le=100_000, description="Optimizer steps.")
    resolution: int = Field(
        default=512,
        ge=64,
        le=2048,
        description="Training side in pixels (a multiple of 16): images keep their aspect "
        "ratio in buckets of about resolution x resolution pixels.",
    )
    rank: int = Field(default=16, ge=1, le=256, description="LoRA rank.")
    lora_alpha: int | None = Field(
        default=None, ge=1, le=1024, description="LoRA alpha (default: the rank, a scale of 1)."
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the whole run.")
    learning_rate: float = Field(default=1e-4, gt=0, le=1, description="AdamW learning rate.")
    batch_size: int = Field(default=1, ge=1, le=64, description="Images per step.")
    checkpoint_every: int = Field(
        default=250,
        ge=1,
        le=100_000,
        description="Steps between checkpoints (each with a validation loss and a contact "
        "sheet); the last step always checkpoints.",
    )
    keep_checkpoints: int = Field(default=2, ge=1, le=100, description="Checkpoints kept on disk.")
    validation_prompts: list[Prompt] = Field(
        default_factory=list,
        max_length=16,
        description="Prompts of the contact sheets (default: up to 4 captions of the "
        "validation split).",
    )
    validation_seeds: list[Seed] = Field(
        default_factory=lambda: [0, 1],
        min_length=1,
        max_length=8,
        description="Seeds of the contact sheets: one column each.",
    )
    validation_fraction: float = Field(
        default=0.1,
        ge=0.01,
        le=0.5,
        description="Share of the examples held out for validation when metadata.jsonl "
        "marks none with split=validation.",
    )
    target_modules: list[ModuleName] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        max_length=32,
        description="Linear layers to adapt, by the end of their name inside the "
        "transformer's blocks.",
    )
    qlora: bool = Field(
        default=False,
        description="Load the base transformer in 4 bits (NF4; needs CUDA + bitsandbytes).",
    )
    gradient_checkpointing: bool = Field(
        default=True, description="Recompute activations in the backward pass (less memory)."
    )
    mixed_precision: Literal["auto", "no", "bf16"] = Field(
        default="auto",
        description="Base weights in bf16 (auto: on a GPU); LoRA weights stay float32.",
    )
    adam_8bit: Literal["auto", "on", "off"] = Field(
        default="auto", description="bitsandbytes' 8-bit AdamW (auto: when importable, on a GPU)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA if present."
    )
    resume: bool = Field(
        default=False, description="Continue from the last checkpoint under --output, if any."
    )
    guidance_scale: float = Field(
        default=1.0, ge=0, le=100, description="Guidance embedding while training (FLUX.1-dev)."
    )
    weighting_scheme: Literal["none", "sigma_sqrt", "logit_normal", "mode", "cosmap"] = Field(
        default="none",
        description="Timestep sampling and loss weighting (diffusers.training_utils).",
    )
    logit_mean: float = Field(
        default=0.0, ge=-10, le=10, description="Mean of logit_normal sampling."
    )
    logit_std: float = Field(default=1.0, gt=0, le=10, description="Std of logit_normal sampling.")
    mode_scale: float = Field(default=1.29, ge=0, le=10, description="Scale of mode sampling.")
    max_sequence_length: int = Field(
        default=512, ge=1, le=512, description="T5 tokens per caption (FLUX.1-dev: up to 512)."
    )
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000, description="Gradient clipping norm.")
    weight_decay: float = Field(default=1e-4, ge=0, le=1, description="AdamW weight decay.")
    sample_steps: int = Field(
        default=28, ge=1, le=100, description="Denoising steps of contact sheets."
    )
    sample_guidance_scale: float = Field(
        default=3.5, ge=0, le=100, description="Guidance of the contact sheets' images."
    )
    upload: str | None = Field(
        default=None,
        min_length=1,
        description="After a successful run, copy the adapter, metrics.json and the contact "
        "sheets under this fsspec URI prefix (s3://bucket/prefix); the result names the "
        "uploaded adapter.",
    )

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % RESOLUTION_MULTIPLE:
            raise ValueError(f"{value} is not a multiple of {RESOLUTION_MULTIPLE}")
        return value

    @field_validator("target_modules")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a module is named twice")
        return value

    @property
    def alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else self.rank

    def fingerprint(self) -> dict[str, object]:
        """The settings a run's trajectory depends on: a checkpoint resumes only under the
        same ones (the step count, outputs and sampling may change)."""
        return self.model_dump(include=TRAJECTORY_FIELDS)


TRAJECTORY_FIELDS = {
    "base",
    "revision",
    "resolution",
    "rank",
    "lora_alpha",
    "seed",
    "learning_rate",
    "batch_size",
    "validation_fraction",
    "target_modules",
    "qlora",
    "mixed_precision",
    "adam_8bit",
    "guidance_scale",
    "weighting_scheme",
    "logit_mean",
    "logit_std",
    "mode_scale",
    "max_sequence_length",
    "max_grad_norm",
    "weight_decay",
}


def flag(name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field (``learning_rate`` →
    ``--learning-rate``): the trainer's parser and the operator's Job share it."""
    return "--" + name.replace("_", "-")

"""The base pipeline and the LoRA on its transformer, as diffusers' FLUX LoRA script
sets them up: everything frozen, a peft ``LoraConfig`` added through diffusers' PEFT
integration (``add_adapter``), the trainable LoRA weights in float32 over a bf16 (or,
with QLoRA, NF4) base."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flux_trainer import adapter
from flux_trainer.config import TrainConfig
from flux_trainer.errors import ConfigError, MissingDependencyError

BLOCKS = ("transformer_blocks", "single_transformer_blocks")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype  # of the frozen weights and the cached inputs


def placement(config: TrainConfig) -> Placement:
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise MissingDependencyError("--device cuda: no CUDA device is available")
    device = torch.device(
        "cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu"
    )
    if config.qlora:
        _check_qlora(device)
    bf16 = config.mixed_precision == "bf16" or (
        config.mixed_precision == "auto" and device.type == "cuda"
    )
    return Placement(device, torch.bfloat16 if bf16 or config.qlora else torch.float32)


def _check_qlora(device: torch.device) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError(
            "--qlora needs the bitsandbytes package (pip install 'fluxserve[train,qlora]')"
        )
    if device.type != "cuda":
        raise MissingDependencyError("--qlora needs a CUDA device (bitsandbytes' 4-bit kernels)")


def load_pipeline(config: TrainConfig, where: Placement) -> Any:
    """The base ``FluxPipeline``, frozen, on the device (QLoRA: the transformer in NF4,
    loaded through diffusers' ``BitsAndBytesConfig``)."""
    from diffusers import FluxPipeline

    extra: dict[str, Any] = {}
    if config.qlora:
        extra["transformer"] = load_4bit_transformer(config, where)
    try:
        pipe = FluxPipeline.from_pretrained(
            config.base, revision=config.revision, torch_dtype=where.dtype, **extra
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--base {config.base!r}: cannot load a FLUX pipeline: {exc}") from exc
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).requires_grad_(False)
    # The transformer joins them once the prompts are encoded and the text encoders gone
    # (``Run.load``): T5 and the transformer together need 33 GB in bf16. bitsandbytes
    # placed a 4-bit transformer already.
    for name in ("vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).to(where.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_4bit_transformer(config: TrainConfig, where: Placement) -> Any:
    from diffusers import BitsAndBytesConfig, FluxTransformer2DModel
    from peft import prepare_model_for_kbit_training

    nf4 = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=where.dtype
    )
    try:
        transformer = FluxTransformer2DModel.from_pretrained(
            config.base,
            subfolder="transformer",
            revision=config.revision,
            quantization_config=nf4,
            torch_dtype=where.dtype,
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--base {config.base!r}: cannot load its transformer: {exc}") from exc
    # As diffusers' QLoRA example: norms in float32, inputs that require grad.
    return prepare_model_for_kbit_training(transformer, use_gradient_checkpointing=False)


def target_pattern(transformer: Any, names: list[str]) -> str:
    """A peft ``target_modules`` regex for the Linear layers inside the blocks whose names
    end in one of ``names``; a name that matches no layer is an error listing the ones
    that exist."""
    linear = [
        name
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and name.split(".", 1)[0] in BLOCKS
    ]
    for wanted in names:
        if not any(name.endswith("." + wanted) for name in linear):
            tails = sorted({name.split(".", 2)[2] for name in linear})
            raise ConfigError(
                f"--target-modules: {wanted!r} matches no Linear layer in the transformer's "
                f"blocks (they are: {', '.join(tails)})"
            )
    ends = "|".join(re.escape(name) for name in names)
    return rf"^(?:{'|'.join(BLOCKS)})\.\d+\.(?:.*\.)?(?:{ends})$"


def add_lora(transformer: Any, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Add the trainable LoRA to the transformer; returns its parameters (float32)."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        init_lora_weights="gaussian",
        target_modules=target_pattern(transformer, list(config.target_modules)),
    )
    # peft draws the gaussian A matrices from torch's global generator: seeded, so the
    # run's starting point is a function of --seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        transformer.add_adapter(lora)
    cast_training_params(transformer, torch.float32)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("--target-modules: the LoRA has no trainable parameters")
    return params


def lora_state(transformer: Any) -> dict[str, torch.Tensor]:
    """The LoRA's weights, keyed as peft names them (``...to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return dict(get_peft_model_state_dict(transformer))


def restore_lora(transformer: Any, directory: str) -> None:
    """Load a diffusers-format LoRA saved by this trainer back into the transformer's
    adapter, as the script's ``load_model_hook`` does."""
    from diffusers import FluxPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    saved = FluxPipeline.lora_state_dict(directory)
    state = {
        k.removeprefix("transformer."): v for k, v in saved.items() if k.startswith("transformer.")
    }
    result = set_peft_model_state_dict(
        transformer, convert_unet_state_dict_to_peft(state), adapter_name="default"
    )
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ConfigError(
            f"checkpoint {directory}: weights of layers this LoRA lacks: {unexpected[:3]}"
        )


def save_lora(
    transformer: Any, directory: Path, metadata: Mapping[str, object] | None = None
) -> Path:
    """Write the LoRA as ``directory/pytorch_lora_weights.safetensors`` with
    ``FluxPipeline.save_lora_weights`` (diffusers' format and its adapter config), and
    ``metadata`` under ``fluxserve.*`` in the header; returns the file."""
    from diffusers import FluxPipeline

    directory.mkdir(parents=True, exist_ok=True)
    FluxPipeline.save_lora_weights(
        str(directory),
        transformer_lora_layers=lora_state(transformer),
        weight_name=adapter.WEIGHTS,
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
    )
    path = directory / adapter.WEIGHTS
    if metadata:
        _add_metadata(path, {adapter.PREFIX + k: _text(v) for k, v in metadata.items()})
    return path


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _add_metadata(path: Path, extra: Mapping[str, str]) -> None:
    """Rewrite the file with ``extra`` added to its header, keeping diffusers' entries."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as opened:
        metadata = dict(opened.metadata() or {})
        tensors = {key: opened.get_tensor(key) for key in opened.keys()}  # noqa: SIM118
    metadata.update(extra)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(adapter.canonical(save(tensors, metadata=metadata)))
    os.replace(partial, path)

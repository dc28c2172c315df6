"""The optimizer: AdamW over the LoRA's weights, bitsandbytes' 8-bit AdamW where it
applies (it keeps the two moments in 8 bits: a quarter of the optimizer's memory)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch

from flux_trainer.config import TrainConfig
from flux_trainer.errors import MissingDependencyError
from flux_trainer.model import Placement

BETAS = (0.9, 0.999)
EPSILON = 1e-8


def make_optimizer(
    params: Sequence[torch.nn.Parameter], config: TrainConfig, where: Placement
) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer and its name (``adamw`` or ``adamw8bit``)."""
    available = importlib.util.find_spec("bitsandbytes") is not None
    on_gpu = where.device.type == "cuda"
    if config.adam_8bit == "on" and not (available and on_gpu):
        raise MissingDependencyError(
            "--adam-8bit on needs the bitsandbytes package and a CUDA device "
            "(pip install 'fluxserve[train,qlora]')"
        )
    lr, decay = config.learning_rate, config.weight_decay
    if config.adam_8bit == "on" or (config.adam_8bit == "auto" and available and on_gpu):
        import bitsandbytes as bnb

        adam8 = bnb.optim.AdamW8bit(
            list(params), lr=lr, betas=BETAS, eps=EPSILON, weight_decay=decay
        )
        return adam8, "adamw8bit"
    adam = torch.optim.AdamW(list(params), lr=lr, betas=BETAS, eps=EPSILON, weight_decay=decay)
    return adam, "adamw"

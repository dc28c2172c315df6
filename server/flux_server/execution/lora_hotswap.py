"""LoRA adapters on a compiled transformer: one adapter slot, hot-swapped.

Switching named PEFT adapters (``set_adapters``) changes the modules torch.compile
traced and recompiles. Here every adapter's weights are kept in memory and copied into
one slot prepared with diffusers' ``enable_lora_hotswap`` (ranks padded to the largest
adapter's, scalings held in tensors), so a switch or a scale change is an in-place copy
that no compiled graph notices. "No adapter" is the slot at scale 0.

A request combining adapters gets them fused into the slot (:func:`fuse`: their ranks
side by side, each scale folded into its weights), so the sum of their ranks must fit the
slot's (``--lora-max-rank``; the request is refused at admission otherwise, naming the
rank to start with); ``lora.load_adapters`` and ``lora.activate`` delegate to this class when the
pipeline carries one (``attach``), so the rest of the server is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SLOT = "fluxserve_slot"
ATTR = "_fluxserve_hotswap"


class UnknownAdapterError(ValueError):
    """A request for an adapter that was not loaded; lists the loaded ones."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown adapter {name!r} (known: {', '.join(self.known) or 'none loaded'})"
        )


class AdapterRankError(ValueError):
    """An adapter with a larger rank than the slot was prepared for."""


def lora_rank(path: Path) -> int:
    """The rank of a LoRA weights file: the smallest side of its ``lora_A`` matrices."""
    from safetensors import safe_open

    rank = 0
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 -- safe_open is not a mapping
            if "lora_A" in key or "lora_down" in key:
                rank = max(rank, min(handle.get_slice(key).get_shape()))
    if rank == 0:
        raise ValueError(f"{path}: no lora_A weights found")
    return rank


def attach(pipe: Any, max_rank: int | None) -> HotswapAdapters:
    hot = HotswapAdapters(pipe, max_rank)
    setattr(pipe, ATTR, hot)
    return hot


def fuse(adapters: Sequence[tuple[Mapping[str, Any], float]]) -> dict[str, Any]:
    """Several adapters as one, for the one slot: per layer, their ``lora_A`` stacked
    and their ``lora_B`` side by side, each ``B`` times its scale, so that
    ``B @ A = sum(scale_i * B_i @ A_i)``, the sum PEFT's ``set_adapters`` computes. The
    fused rank is the sum of theirs. A layer only some adapters train takes theirs."""
    import torch

    downs: dict[str, list[Any]] = {}
    ups: dict[str, list[Any]] = {}
    for weights, scale in adapters:
        for key, tensor in weights.items():
            if ".lora_A." in key:
                downs.setdefault(key.replace(".lora_A.", ".{}."), []).append(tensor)
            elif ".lora_B." in key:
                ups.setdefault(key.replace(".lora_B.", ".{}."), []).append(tensor * scale)
            else:  # alphas, kohya's lora_up/down: not a format fusing can read
                raise ValueError(f"LoRA weight {key!r}: only lora_A/lora_B adapters combine")
    fused: dict[str, Any] = {}
    for layer, stacked in downs.items():
        fused[layer.format("lora_A")] = torch.cat(stacked, dim=0)
        fused[layer.format("lora_B")] = torch.cat(ups[layer], dim=1)
    return fused


def attached(pipe: Any) -> HotswapAdapters | None:
    return getattr(pipe, ATTR, None)


class HotswapAdapters:
    def __init__(self, pipe: Any, max_rank: int | None) -> None:
        self.pipe = pipe
        self.max_rank = max_rank
        self.weights: dict[str, dict[str, Any]] = {}
        self.ranks: dict[str, int] = {}
        self.slot_rank = 0
        # What the slot holds: an adapter's name, or a fused combination (names, scales).
        self._in_slot: str | tuple[tuple[str, float], ...] | None = None
        self._base_scaling: dict[int, float] = {}

    def load(self, specs: Sequence[Any], weight_file: Any) -> None:
        """Read every adapter, check its rank, prepare the slot with the first one.
        ``weight_file(spec)`` gives the adapter's ``.safetensors`` file."""
        from safetensors.torch import load_file

        files = {spec.name: Path(weight_file(spec)) for spec in specs}
        self.ranks = {name: lora_rank(path) for name, path in files.items()}
        largest = max(self.ranks.values())
        target = self.max_rank if self.max_rank is not None else largest
        for name, rank in self.ranks.items():
            if rank > target:
                raise AdapterRankError(
                    f"adapter {name!r} has rank {rank}, over --lora-max-rank {target}: "
                    f"start with --lora-max-rank {rank} or more"
                )
        self.weights = {name: load_file(str(path)) for name, path in files.items()}
        self.slot_rank = target
        self.pipe.enable_lora_hotswap(target_rank=target)
        first = specs[0].name
        self.pipe.load_lora_weights(dict(self.weights[first]), adapter_name=SLOT)
        self._in_slot = first
        self._remember_scalings()
        self._scale(0.0)
        log.info("lora hot-swap slot ready", extra={"target_rank": target, "ranks": self.ranks})

    def names(self) -> set[str]:
        return set(self.weights)

    def activate(self, adapters: Mapping[str, float]) -> None:
        if not adapters:
            self._scale(0.0)
            return
        for name in adapters:
            if name not in self.weights:
                raise UnknownAdapterError(name, self.weights)
        if len(adapters) > 1:
            # The scales are in the fused weights: the slot runs at scale 1.
            fused = tuple(sorted((name, float(scale)) for name, scale in adapters.items()))
            if fused != self._in_slot:
                weights = fuse([(self.weights[name], scale) for name, scale in fused])
                self.pipe.load_lora_weights(weights, adapter_name=SLOT, hotswap=True)
                self._in_slot = fused
                self._remember_scalings()
            self._scale(1.0)
            return
        ((name, scale),) = adapters.items()
        if name != self._in_slot:
            self.pipe.load_lora_weights(dict(self.weights[name]), adapter_name=SLOT, hotswap=True)
            self._in_slot = name
            self._remember_scalings()
        self._scale(float(scale))

    def _lora_layers(self) -> list[Any]:
        from peft.tuners.lora import LoraLayer

        return [
            m
            for m in self.pipe.transformer.modules()
            if isinstance(m, LoraLayer) and SLOT in m.scaling
        ]

    def _remember_scalings(self) -> None:
        # The swap wrote alpha / rank of the adapter now in the slot; a request's scale
        # multiplies it.
        self._base_scaling = {id(m): float(m.scaling[SLOT]) for m in self._lora_layers()}

    def _scale(self, scale: float) -> None:
        import torch

        for module in self._lora_layers():
            value = self._base_scaling[id(module)] * scale
            current = module.scaling[SLOT]
            if isinstance(current, torch.Tensor):
                current.fill_(value)  # in place: the compiled graph reads the tensor
            else:
                module.scaling[SLOT] = value

"""LoRA adapters: declared at start, loaded once through diffusers' PEFT integration,
switched per batch.

``--lora NAME=PATH[:SCALE]`` (repeatable) names an adapter, where its weights are (a
directory holding ``pytorch_lora_weights.safetensors`` or a ``.safetensors`` file, or an
``s3://`` URI: see lora_source) and its default scale. A request (or a style preset)
names the adapters it wants; the batcher only groups requests with the same adapter set,
and ``AdapterSwitch.ensure`` sets the pipeline to that set before each batch (empty:
adapters off).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flux_server.execution import lora_hotswap
from flux_server.execution.lora_hotswap import UnknownAdapterError

log = logging.getLogger(__name__)

# Adapter names become keys of torch ModuleDicts inside PEFT: no dots.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$")
MAX_SCALE = 4.0
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections of the FLUX transformer that ``write_tiny_lora`` adapts."""


class LoraFlagError(ValueError):
    """A ``--lora`` value that cannot be used; the message quotes it and says why."""


class LoraLoadError(RuntimeError):
    """An adapter whose weights could not be loaded; names the adapter and its path."""


class LoraSpec(BaseModel):
    """One adapter the server loads at start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN.pattern, description="Adapter name requests use.")
    path: str = Field(min_length=1, description="Directory or .safetensors file of the LoRA.")
    scale: float = Field(1.0, ge=0.0, le=MAX_SCALE, description="Default scale, 0 to 4.")


def parse_lora_flag(value: str) -> LoraSpec:
    """``NAME=PATH[:SCALE]`` → ``LoraSpec``; ``LoraFlagError`` says what is wrong."""
    where = f"--lora {value!r}"
    name, sep, rest = value.partition("=")
    name = name.strip()
    if not sep:
        raise LoraFlagError(f"{where}: expected NAME=PATH[:SCALE]")
    if not NAME_PATTERN.match(name):
        raise LoraFlagError(
            f"{where}: adapter name {name!r} must be 1-63 letters, digits, '_' or '-'"
        )
    path, scale = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    # A tail with a slash is the path's own colon (s3://bucket/key), not a scale.
    if colon and "/" not in tail:
        try:
            scale = float(tail)
        except ValueError:
            raise LoraFlagError(f"{where}: scale {tail!r} is not a number") from None
        path = head
        if not math.isfinite(scale) or not 0.0 <= scale <= MAX_SCALE:
            raise LoraFlagError(f"{where}: scale {tail} is outside 0 to {MAX_SCALE:g}")
    if not path.strip():
        raise LoraFlagError(f"{where}: the path is empty")
    return LoraSpec(name=name, path=path.strip(), scale=scale)


def parse_lora_flags(values: Iterable[str]) -> list[LoraSpec]:
    """All ``--lora`` values, refusing a name given twice."""
    specs: list[LoraSpec] = []
    for value in values:
        spec = parse_lora_flag(value)
        if any(s.name == spec.name for s in specs):
            raise LoraFlagError(f"--lora {value!r}: adapter {spec.name!r} is given twice")
        specs.append(spec)
    return specs


def loaded_adapters(pipe: Any) -> set[str]:
    """Names of the adapters loaded into any component of the pipeline."""
    hot = lora_hotswap.attached(pipe)
    if hot is not None:
        return hot.names()
    listed: Mapping[str, Sequence[str]] = pipe.get_list_adapters()
    return {name for names in listed.values() for name in names}


def activate(pipe: Any, adapters: Mapping[str, float]) -> None:
    """Use exactly these adapters at these scales; an empty mapping turns LoRA off."""
    hot = lora_hotswap.attached(pipe)
    if hot is not None:
        hot.activate(adapters)
        return
    if not adapters:
        if loaded_adapters(pipe):
            pipe.disable_lora()
        return
    known = loaded_adapters(pipe)
    for name in adapters:
        if name not in known:
            raise UnknownAdapterError(name, known)
    pipe.enable_lora()
    pipe.set_adapters(list(adapters), adapter_weights=[float(s) for s in adapters.values()])


def load_adapters(pipe: Any, specs: Sequence[LoraSpec]) -> dict[str, LoraSpec]:
    """Load every adapter once (blocking: call at start, before serving), then leave the
    pipeline with adapters off. Returns the specs by name."""
    hot = lora_hotswap.attached(pipe)
    if hot is not None:
        # A compiled transformer: one slot, hot-swapped (see lora_hotswap).
        for spec in specs:
            if not Path(spec.path).exists():
                raise LoraLoadError(f"adapter {spec.name!r}: {spec.path} does not exist")
        hot.load(specs, _weights_file)
        return {spec.name: spec for spec in specs}
    loaded: dict[str, LoraSpec] = {}
    for spec in specs:
        path = Path(spec.path)
        if not path.exists():
            raise LoraLoadError(f"adapter {spec.name!r}: {spec.path} does not exist")
        if path.is_file():
            source, kwargs = str(path.parent), {"weight_name": path.name}
        else:
            source, kwargs = str(path), {}
        try:
            pipe.load_lora_weights(source, adapter_name=spec.name, **kwargs)
        except Exception as exc:  # diffusers/PEFT raise many types; all mean "unusable"
            raise LoraLoadError(f"adapter {spec.name!r} from {spec.path}: {exc}") from exc
        loaded[spec.name] = spec
        log.info("lora adapter loaded", extra={"adapter": spec.name, "path": spec.path})
    activate(pipe, {})
    return loaded


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _weights_file(spec: LoraSpec) -> Path:
    path = Path(spec.path)
    return path if path.is_file() else path / DEFAULT_WEIGHT_NAME


def weight_files(spec: LoraSpec) -> list[Path]:
    """The weight files of an adapter: the file itself, or a directory's weight files
    (top level, links followed; kubelet's dot-folders skipped)."""
    path = Path(spec.path)
    if path.is_file():
        return [path]
    return sorted(
        child
        for child in path.iterdir()
        if not child.name.startswith(".") and child.is_file() and child.suffix in WEIGHT_SUFFIXES
    )


def fingerprint(spec: LoraSpec) -> str:
    """A digest of the adapter's weights, equal on every replica that mounts the same
    files: part of the result cache key, so new weights under an old name never serve
    images made with the old ones."""
    digest = hashlib.sha256()
    for file in weight_files(spec):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class AdapterSwitch:
    """Remembers the pipeline's adapter set so back-to-back batches with the same set
    skip the switch. One per pipeline, used from the one thread that runs it."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._current: tuple[tuple[str, float], ...] | None = None

    def ensure(self, adapters: Mapping[str, float] | Iterable[tuple[str, float]]) -> None:
        wanted = tuple(sorted(adapters.items() if isinstance(adapters, Mapping) else adapters))
        if wanted == self._current:
            return
        self._current = None  # unknown until the switch succeeds
        activate(self.pipe, dict(wanted))
        self._current = wanted


def write_tiny_lora(
    pipe: Any, out_dir: str | Path, name: str, *, rank: int = 4, seed: int = 0
) -> Path:
    """Save a LoRA with random weights for the pipeline's FLUX transformer (for tests and
    demos). The pipeline itself is left untouched. Returns the weights file."""
    import torch
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    transformer = copy.deepcopy(pipe.transformer)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=list(TARGET_MODULES),
        # Random A and B: the adapter visibly changes the output (PEFT's default makes
        # B zero, an adapter that does nothing until trained).
        init_lora_weights=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=name)
    state = get_peft_model_state_dict(transformer, adapter_name=name)
    FluxPipeline.save_lora_weights(
        str(out), transformer_lora_layers=state, weight_name=DEFAULT_WEIGHT_NAME
    )
    return out / DEFAULT_WEIGHT_NAME

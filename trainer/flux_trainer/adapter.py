"""The adapter file: ``pytorch_lora_weights.safetensors`` in diffusers' format, and what
it records about its training.

Written by ``FluxPipeline.save_lora_weights`` (keys ``transformer.<layer>.lora_A.weight``,
peft's ``LoraConfig`` under diffusers' ``lora_adapter_metadata``), so
``FluxPipeline.load_lora_weights`` and ``python -m flux_server --lora NAME=PATH`` load it.
The trainer adds string entries under ``fluxserve.*`` to the safetensors header: base
model and revision, rank, alpha, target modules, dataset hash and source, trainer
version, resolution, steps, seed and the validation losses. Reading them needs no torch:
a safetensors file starts with the length of its JSON header.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from flux_trainer.errors import TrainerError

WEIGHTS = "pytorch_lora_weights.safetensors"
PREFIX = "fluxserve."
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the header


def canonical(blob: bytes) -> bytes:
    """The same safetensors file with its metadata in key order: safetensors writes it
    from a hash map, in an order that changes from run to run, and equal weights and
    records should give equal bytes (and sha256)."""
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    metadata = header.pop("__metadata__", {})
    text = json.dumps(
        {"__metadata__": dict(sorted(metadata.items())), **header}, separators=(",", ":")
    ).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + blob[8 + length :]


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path``: tensor entries and ``__metadata__``."""
    try:
        with Path(path).open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > _MAX_HEADER:
                raise ValueError(f"a header of {length} bytes")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise TrainerError(f"{path}: not a readable safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise TrainerError(f"{path}: not a safetensors file (its header is not an object)")
    return header


def describe(path: Path) -> dict[str, Any]:
    """What ``inspect`` prints: the training record, the LoRA's shape, diffusers' config."""
    from flux_trainer.hashing import file_sha256

    header = read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    training = {
        k.removeprefix(PREFIX): _value(k.removeprefix(PREFIX), v)
        for k, v in metadata.items()
        if k.startswith(PREFIX)
    }
    parameters = 0
    for entry in header.values():
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        parameters += count
    return {
        "file": str(path),
        "sha256": file_sha256(path),
        "tensors": len(header),
        "parameters": parameters,
        "training": training,
        "other_metadata": sorted(k for k in metadata if not k.startswith(PREFIX)),
    }


STRING_KEYS = frozenset(
    {
        "base_model",
        "base_revision",
        "dataset_sha256",
        "dataset_source",
        "dataset_revision",
        "trainer_version",
    }
)
"""Entries written as plain text; the others are JSON (numbers, lists)."""


def _value(key: str, text: str) -> object:
    if key in STRING_KEYS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text

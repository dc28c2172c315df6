"""Checkpoints: everything a stopped run needs to go on as if it had not stopped.

``OUTPUT/checkpoints/step-000100/`` holds the LoRA (diffusers format, loadable on its
own), the optimizer's state, the state of the run's random generator and ``state.json``
(the step, the settings and dataset it belongs to, the validation losses so far, the
seconds spent). A checkpoint is written in a sibling folder and renamed into place, so
one that exists is complete; older ones beyond ``--keep-checkpoints`` are removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from flux_trainer.errors import ResumeError
from flux_trainer.model import restore_lora, save_lora

FOLDER = "checkpoints"
STATE = "state.json"
_NAME = re.compile(r"^step-(\d{6,})$")


def _folder(output: Path, step: int) -> Path:
    return output / FOLDER / f"step-{step:06d}"


def save(
    output: Path,
    step: int,
    transformer: Any,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    keep: int,
) -> Path:
    final = _folder(output, step)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    save_lora(transformer, partial)
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    torch.save(generator.get_state(), partial / "rng.pt")
    (partial / STATE).write_text(json.dumps({**state, "step": step}, indent=2))
    if final.exists():  # a run resumed before this step wrote it once already
        shutil.rmtree(final)
    os.rename(partial, final)
    for old in _steps(output)[:-keep]:
        shutil.rmtree(_folder(output, old))
    return final


def _steps(output: Path) -> list[int]:
    root = output / FOLDER
    if not root.is_dir():
        return []
    found = (_NAME.match(p.name) for p in root.iterdir())
    return sorted(int(m[1]) for m in found if m and (root / m[0] / STATE).is_file())


def latest(output: Path) -> Path | None:
    steps = _steps(output)
    return _folder(output, steps[-1]) if steps else None


def read_state(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / STATE).read_text()))


def check_compatible(
    state: dict[str, Any], fingerprint: dict[str, Any], dataset_sha256: str, folder: Path
) -> None:
    """Refuse to resume a checkpoint made with other settings or another dataset."""
    if state.get("dataset_sha256") != dataset_sha256:
        raise ResumeError(
            f"--resume: {folder} was trained on dataset {state.get('dataset_sha256')}, "
            f"this run's dataset is {dataset_sha256}"
        )
    saved = state.get("fingerprint", {})
    differ = sorted(
        k for k in fingerprint.keys() | saved.keys() if saved.get(k) != fingerprint.get(k)
    )
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in differ)
        raise ResumeError(f"--resume: {folder} was made with other settings ({changes})")


def restore(
    folder: Path, transformer: Any, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, Any]:
    """Load the LoRA, optimizer and generator states of ``folder``; returns its state."""
    restore_lora(transformer, str(folder))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    generator.set_state(torch.load(folder / "rng.pt", weights_only=True))
    return read_state(folder)

"""Contact sheets: the same prompts and seeds rendered at the start (the base model) and
at every checkpoint, one PNG per checkpoint (a row per prompt, a column per seed), so
what the adapter learnt can be seen step by step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from flux_trainer.encode import Prompt

FOLDER = "samples"
LABEL_HEIGHT = 14


@torch.no_grad()
def render(
    pipe: Any,
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    size: int,
    steps: int,
    guidance: float,
) -> list[list[Image.Image]]:
    """One image per (prompt, seed), from the cached prompt embeddings."""
    rows = []
    for prompt in prompts:
        row = []
        for seed in seeds:
            result = pipe(
                prompt_embeds=prompt.embeds.unsqueeze(0),
                pooled_prompt_embeds=prompt.pooled.unsqueeze(0),
                width=size,
                height=size,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="pil",
            )
            row.append(result.images[0])
        rows.append(row)
    return rows


def sheet(rows: Sequence[Sequence[Image.Image]], label: str) -> Image.Image:
    width = sum(image.width for image in rows[0])
    height = sum(row[0].height for row in rows) + LABEL_HEIGHT
    canvas = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
    top = LABEL_HEIGHT
    for row in rows:
        left = 0
        for image in row:
            canvas.paste(image, (left, top))
            left += image.width
        top += row[0].height
    return canvas


def write(output: Path, step: int, sheet_image: Image.Image) -> Path:
    folder = output / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    sheet_image.save(path)
    return path

"""A synthetic dataset of "posters" in the imagefolder layout, for demos and tests.

``python -m flux_trainer.posters DIR`` writes DIR/images/*.png and DIR/metadata.jsonl:
each poster has a background colour, a shape of some colour centred on it and the
brand's promo tag (a red block) in its top right corner; its caption describes the
poster and its ``rules`` field states the brand's rules, which training appends to the
caption. Some posters are portrait, some square (aspect buckets), and the last few are
marked ``split: validation``. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

BRAND_TAG = (214, 32, 48)
RULES = ["brand red promo tag in the top right corner", "product centred"]
COLOURS = {
    "blue": (40, 90, 200),
    "green": (40, 160, 80),
    "yellow": (235, 200, 40),
    "purple": (130, 60, 170),
    "orange": (240, 130, 30),
    "black": (20, 20, 20),
}
BACKGROUNDS = {"white": (245, 245, 240), "grey": (150, 150, 150), "cream": (240, 225, 190)}
SHAPES = ("circle", "square", "triangle", "diamond")
MAX_COUNT = len(COLOURS) * len(BACKGROUNDS) * len(SHAPES)


def _shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[int, int, int, int],
    fill: tuple[int, int, int],
) -> None:
    left, top, right, bottom = box
    cx, cy = (left + right) // 2, (top + bottom) // 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=fill)
    else:
        draw.polygon([(cx, top), (right, cy), (cx, bottom), (left, cy)], fill=fill)


def poster(width: int, height: int, background: str, colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (width, height), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    side = min(width, height) // 2
    left, top = (width - side) // 2, (height - side) // 2
    _shape(draw, shape, (left, top, left + side, top + side), COLOURS[colour])
    tag = max(4, width // 4)
    draw.rectangle((width - tag - 2, 2, width - 3, tag // 2 + 2), fill=BRAND_TAG)
    return image


def write_posters(
    out: Path, count: int = 24, size: int = 64, validation: int = 4, seed: int = 0
) -> Path:
    """Write ``count`` posters (``validation`` of them held out) under ``out``."""
    designs = list(itertools.product(sorted(BACKGROUNDS), sorted(COLOURS), SHAPES))
    if not 0 < count <= len(designs):
        raise ValueError(f"count must be 1 to {len(designs)} (distinct designs)")
    random.Random(seed).shuffle(designs)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (background, colour, shape) in enumerate(designs[:count]):
        height = size if index % 3 else size * 5 // 4  # every third poster is portrait
        name = f"images/poster-{index:03d}.png"
        poster(size, height, background, colour, shape).save(out / name)
        record = {
            "file_name": name,
            "text": f"a poster of a {colour} {shape} on a {background} background",
            "rules": RULES,
            "split": "validation" if index >= count - validation else "train",
        }
        lines.append(json.dumps(record))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flux_trainer.posters",
        description="Write a synthetic poster dataset (imagefolder layout) for demos and tests.",
    )
    parser.add_argument("dir", type=Path, help="output folder")
    parser.add_argument("--count", type=int, default=24, help="posters (default 24)")
    parser.add_argument("--size", type=int, default=64, help="width in pixels (default 64)")
    parser.add_argument("--validation", type=int, default=4, help="held out (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 < args.count <= MAX_COUNT:
        parser.error(f"--count must be 2 to {MAX_COUNT}")
    if not 0 < args.validation < args.count:
        parser.error("--validation must be between 1 and --count - 1")
    if not 16 <= args.size <= 2048:
        parser.error("--size must be 16 to 2048")
    write_posters(args.dir, args.count, args.size, args.validation, args.seed)
    print(f"wrote {args.count} posters to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

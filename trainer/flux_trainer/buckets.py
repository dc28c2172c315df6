"""Aspect-ratio buckets: posters are not squares.

Each image goes to the bucket whose aspect ratio is nearest its own (in log space), is
scaled to cover it and centre-cropped by at most a few per cent: the layout (a tag in
the top right corner, a centred product) stays where it was. Images are never flipped,
since a flip would move the tag. A batch holds images of one bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from flux_trainer.config import RESOLUTION_MULTIPLE

# Width/height ratios from 1:2 (tall) to 2:1 (wide), the usual print and screen formats.
RATIOS = (1 / 2, 9 / 16, 2 / 3, 3 / 4, 4 / 5, 1.0, 5 / 4, 4 / 3, 3 / 2, 16 / 9, 2.0)

Size = tuple[int, int]  # (width, height)


def bucket_sizes(resolution: int) -> list[Size]:
    """Sizes of about ``resolution**2`` pixels, sides multiples of 16, one per ratio
    (fewer at small resolutions, where ratios round to the same size)."""
    sizes: list[Size] = []
    for ratio in RATIOS:
        width = _multiple(resolution * math.sqrt(ratio))
        height = _multiple(resolution / math.sqrt(ratio))
        if (width, height) not in sizes:
            sizes.append((width, height))
    return sizes


def _multiple(value: float) -> int:
    return max(RESOLUTION_MULTIPLE, round(value / RESOLUTION_MULTIPLE) * RESOLUTION_MULTIPLE)


def nearest(width: int, height: int, sizes: Sequence[Size]) -> Size:
    ratio = math.log(width / height)
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - ratio), s))


def load_pixels(path: str, size: Size) -> torch.Tensor:
    """The image as a (3, height, width) tensor in [-1, 1], EXIF orientation applied,
    transparency over white, scaled to cover ``size`` and centre-cropped."""
    width, height = size
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image.alpha_composite(rgba)
        image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(scaled, Image.Resampling.LANCZOS)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def epoch_batches(
    buckets: Sequence[Size], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """The batches of one epoch as lists of example indices: each bucket shuffled and cut
    into batches (the last may be short), then the batches shuffled. A function of
    (seed, epoch) alone, so a resumed run draws the same batches."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    by_bucket: dict[Size, list[int]] = {}
    for index, size in enumerate(buckets):
        by_bucket.setdefault(size, []).append(index)
    batches = []
    for size in sorted(by_bucket):
        members = by_bucket[size]
        order = torch.randperm(len(members), generator=generator).tolist()
        shuffled = [members[i] for i in order]
        batches += [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


class Batches:
    """The batch of each optimizer step, counting through the epochs (one epoch's batches
    kept at a time)."""

    def __init__(self, buckets: Sequence[Size], batch_size: int, seed: int) -> None:
        self.buckets, self.batch_size, self.seed = list(buckets), batch_size, seed
        self._epoch = 0
        self._batches = epoch_batches(self.buckets, batch_size, seed, 0)

    def at(self, step: int) -> list[int]:
        """The batch of step ``step`` (0-based)."""
        epoch, position = divmod(step, len(self._batches))
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = epoch_batches(self.buckets, self.batch_size, self.seed, epoch)
        return self._batches[position]

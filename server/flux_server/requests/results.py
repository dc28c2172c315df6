"""What a generation or an edit answers: its images, encoded in the format the caller
asked for (:class:`GeneratedImage`), with the timings and the experiment arm
(:class:`GenerationResult`). No framework, no torch: admission (the cache), async jobs
and both adapters use them."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from flux_server.experiments.assignment import Assignment


@dataclass(frozen=True)
class GeneratedImage:
    """One image as the caller gets it: encoded, with its size and seed."""

    data: bytes
    format: str
    width: int
    height: int
    seed: int

    @classmethod
    def encoded(cls, image: Image.Image, fmt: str, seed: int) -> GeneratedImage:
        """``image`` in ``fmt`` (png, jpeg or webp)."""
        return cls(encode(image, fmt), fmt, image.width, image.height, seed)

    def as_json(self, data_key: str) -> dict[str, Any]:
        """A JSON object of the image: its bytes in base64 under ``data_key`` (the result
        cache says ``b64``, a queue outcome ``data``), then format, size and seed."""
        return {
            data_key: base64.b64encode(self.data).decode("ascii"),
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], data_key: str) -> GeneratedImage:
        """What :meth:`as_json` wrote."""
        return cls(
            data=base64.b64decode(entry[data_key]),
            format=entry["format"],
            width=entry["width"],
            height=entry["height"],
            seed=entry["seed"],
        )


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="WEBP", quality=92)
    return buffer.getvalue()


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    request_id: str
    release: str
    model: str
    batch_size: int
    queue_ms: float
    inference_ms: float
    total_ms: float
    cache_hit: bool = False
    experiment: Assignment | None = None
    """The experiment arm that served the request; None outside any experiment."""

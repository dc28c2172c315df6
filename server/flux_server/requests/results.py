"""What a generation or an edit answers: its images, encoded in the format the caller
asked for (:class:`GeneratedImage`), with the timings and the experiment arm
(:class:`GenerationResult`). No framework, no torch: admission (the cache), async jobs
and both adapters use them."""

from __future__ import annotations

import io
from dataclasses import dataclass

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

"""The torch layer's own inputs and outputs: what one text-to-image call takes
(:class:`TextToImage`) and gives back (:class:`Picture`), the hooks a pipeline call
runs between denoising steps, and the error it raises for an input it cannot take.

Plain on purpose: no request, no wire type, no framework. The layers above translate
their requests into these (``ResolvedRequest.text_to_image``) and the pictures into
their results (encoded images), so the engine can be read, tested and changed without
knowing who asks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from PIL import Image

#: Seeds are 63-bit; image ``i`` of a call uses ``seed + i``, wrapping within that range.
MAX_SEED: Final[int] = 2**63 - 1

ProgressFn = Callable[[int, int], None]
"""Called after each denoising step with (1-based step, total steps)."""

StopFn = Callable[[], bool]
"""Asked after each denoising step: stop the call now?"""

T = TypeVar("T")


class InputRejected(ValueError):
    """An input a model cannot take, naming the input's field (``mask``, ``question``,
    ...). The request layers check what they queue, so this reaching a caller means a
    check is missing above; it is still answered as the caller's error (400)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def seeds_from(seed: int, count: int) -> list[int]:
    """``seed, seed + 1, ...`` for ``count`` images, wrapping within the 63-bit range."""
    return [(seed + i) % (MAX_SEED + 1) for i in range(count)]


def split_rows(rows: Sequence[T], counts: Sequence[int]) -> list[list[T]]:
    """The rows of one batched call back to the callers that asked for them: the first
    ``counts[0]`` rows to the first, the next ``counts[1]`` to the second, and so on."""
    parts: list[list[T]] = []
    offset = 0
    for count in counts:
        parts.append(list(rows[offset : offset + count]))
        offset += count
    return parts


@dataclass(frozen=True)
class TextToImage:
    """One caller's share of a text-to-image call: ``num_images`` images of one prompt.
    ``adapters`` are (LoRA name, weight) pairs, sorted."""

    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    num_images: int = 1
    negative_prompt: str | None = None
    true_cfg_scale: float = 1.0
    adapters: tuple[tuple[str, float], ...] = ()

    def batch_key(self) -> tuple[object, ...]:
        """Inputs with equal keys can share one pipeline call."""
        return (
            self.width,
            self.height,
            self.steps,
            self.guidance_scale,
            self.true_cfg_scale,
            self.adapters,
        )

    def seeds(self) -> list[int]:
        """Image i uses seed + i."""
        return seeds_from(self.seed, self.num_images)


@dataclass(frozen=True)
class Picture:
    """One image a pipeline made, with the seed that made it."""

    image: Image.Image
    seed: int

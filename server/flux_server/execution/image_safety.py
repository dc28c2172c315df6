"""The output check: a transformers image-classification model run on every image the
engine makes, before anything leaves the process (``--image-safety-model``).

A prompt that passes the prompt filter can still produce an image nobody should get, and
an edit starts from a photo the prompt filter never saw. The classifier runs in the
engine thread right after the pipeline call, once per batch: all the batch's images go
through one forward pass (a ViT-base costs a fraction of one denoising step).

The recommended model is ``Falconsai/nsfw_image_detection`` (ViT-base, labels
``normal``/``nsfw``, Apache-2.0). Any image-classification model works: every label
outside :data:`SAFE_IMAGE_LABELS` counts as unsafe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = [
    "DEFAULT_IMAGE_THRESHOLD",
    "SAFE_IMAGE_LABELS",
    "ImageFlag",
    "ImageSafetyClassifier",
    "ImageSafetyModelError",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE_THRESHOLD = 0.5
"""With a two-label model, 0.5 flags an image whose unsafe label wins."""

# Labels of harmless images in the common detectors (normal/nsfw, sfw/nsfw, the
# five-class drawings/hentai/neutral/porn/sexy); every other label is unsafe.
SAFE_IMAGE_LABELS = frozenset(
    {"normal", "safe", "sfw", "neutral", "drawings", "drawing", "label_0"}
)


class ImageSafetyModelError(ValueError):
    """An image safety model that cannot be loaded; the message names it."""


@dataclass(frozen=True)
class ImageFlag:
    """Why one image was refused: the unsafe label and its probability."""

    label: str
    score: float

    def __str__(self) -> str:
        return f"{self.label}:{self.score:.3f}"


class ImageSafetyClassifier:
    """A transformers image-classification model on the engine's device.

    An image is flagged when an unsafe label's probability is above ``threshold``; 0
    flags every image, 1 none (a probability never exceeds 1).
    """

    def __init__(
        self, model: str | Path, threshold: float = DEFAULT_IMAGE_THRESHOLD, device: str = "cpu"
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"image safety threshold must be in [0, 1], got {threshold}")
        name = str(model)
        looks_like_path = name.startswith(("/", ".", "~")) or Path(name).exists()
        if looks_like_path and not Path(name).expanduser().is_dir():
            raise ImageSafetyModelError(f"image safety model {name}: not a directory")
        self.model_name = name
        self.threshold = threshold
        self.device = device
        import torch  # heavy imports, only when a model is configured
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        try:
            self._processor = AutoImageProcessor.from_pretrained(name)
            self._model = AutoModelForImageClassification.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ImageSafetyModelError(
                f"image safety model {name}: cannot load it: {exc}"
            ) from exc
        self._model.to(device).eval()
        self._torch = torch
        labels: dict[int, str] = dict(self._model.config.id2label)
        self._unsafe = [
            i for i, label in labels.items() if label.casefold() not in SAFE_IMAGE_LABELS
        ]
        if len(labels) == 2 and not self._unsafe:
            self._unsafe = [1]
        self._labels = labels
        log.info(
            "image safety model ready",
            extra={"model": name, "threshold": threshold, "unsafe_labels":
                   [labels[i] for i in self._unsafe]},
        )  # fmt: skip

    def flag(self, images: Sequence[Image.Image]) -> list[ImageFlag | None]:
        """One verdict per image, from one forward pass over all of them."""
        if not images:
            return []
        torch = self._torch
        started = time.perf_counter()
        rgb = [image.convert("RGB") for image in images]
        inputs: Any = self._processor(images=rgb, return_tensors="pt")
        with torch.inference_mode():
            logits = self._model(**inputs.to(self.device)).logits.float()
        probabilities = self._probabilities(logits).cpu().tolist()
        verdicts = [self._verdict(row) for row in probabilities]
        log.debug(
            "images classified",
            extra={"images": len(images), "ms": round((time.perf_counter() - started) * 1000, 2)},
        )
        return verdicts

    def _probabilities(self, logits: Any) -> Any:
        problem = getattr(self._model.config, "problem_type", None)
        if problem == "multi_label_classification":
            return self._torch.sigmoid(logits)
        return self._torch.softmax(logits, dim=-1)

    def _verdict(self, row: Sequence[float]) -> ImageFlag | None:
        worst = max(self._unsafe, key=lambda i: row[i], default=None)
        if worst is None:
            return None
        score = float(row[worst])
        if self.threshold > 0 and score <= self.threshold:
            return None
        return ImageFlag(self._labels[worst], score)

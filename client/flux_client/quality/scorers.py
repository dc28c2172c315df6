"""The quality gate's image models (the ``quality`` extra: torch and transformers).

- :class:`ClipScorer`: prompt adherence, the CLIP score ``100 * max(cos(image, text), 0)``
  of a ``CLIPModel`` (Hessel et al., 2021, without their 2.5 weight).
- :class:`SimilarityScorer`: the distance from stable, the cosine similarity of two
  images' embeddings by an image model (DINOv2 by default: its embeddings follow what
  an image shows, not its pixels, so a re-encoded or slightly changed image stays close
  and a different subject does not).

Both load a hub id or a local directory through ``from_pretrained``: the tests load tiny
random models saved with ``save_pretrained`` through the same code as the real ones.
Only this module of the SDK imports torch (and only when the gate runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image


class ScorerError(ValueError):
    """A scoring model cannot be loaded (a wrong path or id, the extra not installed)."""


def _torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ScorerError(
            f"the quality gate needs torch and transformers: pip install 'fluxserve[quality]' "
            f"({exc})"
        ) from None
    return torch


def pick_device(device: str | None) -> str:
    """``device``, or CUDA when there is one, else the CPU."""
    if device:
        return device
    return "cuda" if _torch().cuda.is_available() else "cpu"


def _load(what: str, loader: Any, name: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScorerError(f"{what} {name!r} cannot be loaded: {first}") from None


def _load_pair(what: str, classes: tuple[Any, Any], name: str, device: str | None) -> Any:
    """The device, the model on it (in eval mode) and its processor, as a scorer holds them."""
    model_class, processor_class = classes
    picked = pick_device(device)
    return (
        picked,
        _load(what, model_class, name).to(picked).eval(),
        _load(what, processor_class, name),
    )


def _rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    return [image.convert("RGB") for image in images]


class ClipScorer:
    """CLIP score of images against their prompts, 0 to 100."""

    def __init__(self, model: str, device: str | None = None) -> None:
        torch = _torch()
        from transformers import CLIPModel, CLIPProcessor

        pair = (CLIPModel, CLIPProcessor)
        self.device, self.model, self.processor = _load_pair("--clip-model", pair, model, device)
        self._torch = torch

    def scores(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """One score per (image, prompt) pair; prompts past CLIP's 77 tokens are cut."""
        if not images:
            return []
        torch = self._torch
        inputs = self.processor(
            text=list(prompts),
            images=_rgb(images),
            return_tensors="pt",
            padding=True,
            truncation=True,
        ).to(self.device)
        with torch.inference_mode():
            image = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            text = self.model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
            )
        image = _features(image)
        text = _features(text)
        cosine = torch.nn.functional.cosine_similarity(image, text, dim=-1)
        return [float(100.0 * max(c, 0.0)) for c in cosine.float().cpu().tolist()]


class SimilarityScorer:
    """Cosine similarity of two images' embeddings (the CLS token of a DINOv2-like
    ``AutoModel``, or its pooled output when it has one), -1 to 1."""

    def __init__(self, model: str, device: str | None = None) -> None:
        torch = _torch()
        from transformers import AutoImageProcessor, AutoModel

        pair = (AutoModel, AutoImageProcessor)
        self.device, self.model, self.processor = _load_pair(
            "--similarity-model", pair, model, device
        )
        self._torch = torch

    def embed(self, images: Sequence[Image.Image]) -> Any:
        inputs = self.processor(images=_rgb(images), return_tensors="pt").to(self.device)
        with self._torch.inference_mode():
            out = self.model(pixel_values=inputs["pixel_values"])
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]

    def similarities(
        self, first: Sequence[Image.Image], second: Sequence[Image.Image]
    ) -> list[float]:
        """One similarity per pair ``(first[i], second[i])``."""
        if not first:
            return []
        a, b = self.embed(first), self.embed(second)
        cosine = self._torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
        return [float(c) for c in cosine.cpu().tolist()]


def _features(output: Any) -> Any:
    """transformers 5 returns a model output from ``get_*_features``; 4 a tensor."""
    pooled = getattr(output, "pooler_output", None)
    return pooled if pooled is not None else output

"""Live previews: a small picture of each image every N denoising steps, decoded cheaply
from the latents the pipeline is denoising (``previews: true`` on a request or job).

A :class:`PreviewHook` is one of the step-end hooks ``Engine.generate`` runs from
diffusers' ``callback_on_step_end``, beside progress and cancellation; it reads the
latents and never changes them, so an image is byte-identical with and without previews.

Two decoders (``--preview-decoder``):

* ``linear`` (default): unpack FLUX's packed latents ``(B, h/2*w/2, 4C)`` into
  ``(B, C, h, w)`` and project the C channels to RGB with one ``Cx3`` matrix and a bias,
  at the latent grid's size (1/8 of the image's side: 128x128 for 1024²). For FLUX.1's
  16 channels the coefficients are ComfyUI's, fitted by regression of VAE-decoded
  images on latents (``comfy/latent_formats.py``, class ``Flux``:
  ``latent_rgb_factors`` and ``latent_rgb_factors_bias``); they apply to the latents
  as the transformer sees them (shifted and scaled), which is what the pipeline holds
  between steps. Any other channel count (the tiny test models) takes channel ``i`` into
  colour ``i mod 3``, averaged: the shape still comes from the VAE's config.
* ``taef1``: the tiny autoencoder TAEF1 (diffusers ``AutoencoderTiny``, e.g.
  madebyollin/taef1) from ``--preview-taef1 PATH``; a closer picture at a higher cost,
  thumbnailed to at most ``MAX_PREVIEW_SIDE`` px.

Torch is imported inside the functions only: a ``--role front`` process imports this
module for :class:`PreviewImage` and never loads torch.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: FLUX.1's 16 latent channels → (R, G, B); see the module's docstring for the source.
FLUX1_LATENT_RGB: tuple[tuple[float, float, float], ...] = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX1_LATENT_RGB_BIAS: tuple[float, float, float] = (-0.0329, -0.0718, -0.0851)

#: WebP: a 128x128 preview is a few kilobytes (base64 in SSE, bytes over gRPC).
PREVIEW_FORMAT = "webp"
PREVIEW_QUALITY = 70
MAX_PREVIEW_SIDE = 256


@dataclass(frozen=True)
class PreviewImage:
    """One preview: image ``index`` of a request after denoising step ``step``."""

    step: int
    total: int
    index: int
    data: bytes
    format: str
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total": self.total,
            "index": self.index,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "data": base64.b64encode(self.data).decode(),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PreviewImage:
        return cls(
            step=int(body["step"]),
            total=int(body["total"]),
            index=int(body["index"]),
            data=base64.b64decode(body["data"]),
            format=str(body["format"]),
            width=int(body["width"]),
            height=int(body["height"]),
        )


PreviewFn = Callable[[PreviewImage], None]
"""Called with each preview of a request (from the engine thread: hand it over)."""

StepHook = Callable[[int, int, Mapping[str, Any]], None]
"""A step-end hook: (1-based step, total steps, the pipeline's callback tensors)."""


def projection(latent_channels: int) -> tuple[list[list[float]], list[float]]:
    """The ``Cx3`` latent→RGB matrix and the bias for a VAE with ``latent_channels``."""
    if latent_channels == len(FLUX1_LATENT_RGB):
        return [list(row) for row in FLUX1_LATENT_RGB], list(FLUX1_LATENT_RGB_BIAS)
    counts = [len(range(colour, latent_channels, 3)) or 1 for colour in range(3)]
    matrix = [
        [1.0 / counts[colour] if channel % 3 == colour else 0.0 for colour in range(3)]
        for channel in range(latent_channels)
    ]
    return matrix, [0.0, 0.0, 0.0]


def unpack(latents: Any, width: int, height: int, vae_scale_factor: int) -> Any:
    """FLUX's packed latents ``(B, h/2*w/2, 4C)`` → ``(B, C, h, w)`` (the 2x2 patches
    undone, as the pipeline does before its VAE decode)."""
    batch, _, packed = latents.shape
    h = 2 * (int(height) // (vae_scale_factor * 2))
    w = 2 * (int(width) // (vae_scale_factor * 2))
    grid = latents.view(batch, h // 2, w // 2, packed // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, packed // 4, h, w)


class LinearDecoder:
    """Latents → RGB by one matrix product, on the latents' own device."""

    name = "linear"

    def __init__(self, latent_channels: int, vae_scale_factor: int) -> None:
        self.matrix, self.bias = projection(latent_channels)
        self.vae_scale_factor = vae_scale_factor
        self._tensors: dict[tuple[Any, Any], tuple[Any, Any]] = {}

    def __call__(self, latents: Any, width: int, height: int) -> Any:
        """``uint8`` pixels ``(B, h, w, 3)`` on the CPU."""
        import torch

        key = (latents.device, latents.dtype)
        if key not in self._tensors:
            self._tensors[key] = (
                torch.tensor(self.matrix, device=latents.device, dtype=latents.dtype),
                torch.tensor(self.bias, device=latents.device, dtype=latents.dtype),
            )
        matrix, bias = self._tensors[key]
        grid = unpack(latents, width, height, self.vae_scale_factor)
        rgb = torch.einsum("bchw,cr->bhwr", grid, matrix) + bias
        return _to_pixels(rgb)


class Taef1Decoder:
    """Latents → RGB through TAEF1 (diffusers ``AutoencoderTiny``)."""

    name = "taef1"

    def __init__(self, path: str, device: str, dtype: Any, vae_scale_factor: int) -> None:
        from diffusers import AutoencoderTiny

        self.vae = AutoencoderTiny.from_pretrained(path).to(device=device, dtype=dtype)
        self.vae.requires_grad_(False)
        self.vae_scale_factor = vae_scale_factor

    def __call__(self, latents: Any, width: int, height: int) -> Any:
        grid = unpack(latents, width, height, self.vae_scale_factor)
        config = self.vae.config
        # The pipeline's own step before its decode: back from the transformer's scale.
        grid = grid / config.scaling_factor + getattr(config, "shift_factor", 0.0)
        rgb = self.vae.decode(grid.to(self.vae.dtype)).sample.permute(0, 2, 3, 1)
        return _to_pixels(rgb)


Decoder = Callable[[Any, int, int], Any]


def _to_pixels(rgb: Any) -> Any:
    """[-1, 1] floats ``(B, h, w, 3)`` → ``uint8`` numpy on the CPU."""
    import torch

    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def build_decoder(kind: str, pipe: Any, taef1_path: str | None, device: str) -> Decoder:
    """The ``--preview-decoder`` for a loaded pipeline (shapes from its VAE's config)."""
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    if kind == "taef1":
        assert taef1_path is not None  # settings require the path with the kind
        return Taef1Decoder(taef1_path, device, pipe.vae.dtype, scale)
    return LinearDecoder(int(pipe.vae.config.latent_channels), scale)


def encode(pixels: Any) -> tuple[bytes, int, int]:
    """One preview's pixels ``(h, w, 3)`` as WebP bytes, at most ``MAX_PREVIEW_SIDE``."""
    from PIL import Image

    image = Image.fromarray(pixels, "RGB")
    image.thumbnail((MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format=PREVIEW_FORMAT, quality=PREVIEW_QUALITY, method=0)
    return buffer.getvalue(), image.width, image.height


class PreviewHook:
    """The step-end hook of one pipeline call: every ``every`` steps (not the last: the
    final image follows it), the rows someone listens to, decoded and handed over.

    ``rows`` has one entry per image row of the call: ``(sink, index within its
    request)``, or None for a row whose request asked for no previews.
    """

    def __init__(
        self,
        decoder: Decoder,
        every: int,
        rows: Sequence[tuple[PreviewFn, int] | None],
        width: int,
        height: int,
    ) -> None:
        self.decoder, self.every = decoder, every
        self.rows = list(rows)
        self.width, self.height = width, height
        self._wanted = [i for i, row in enumerate(self.rows) if row is not None]

    def __call__(self, step: int, total: int, tensors: Mapping[str, Any]) -> None:
        if not self._wanted or step % self.every or step >= total:
            return
        latents = tensors["latents"]
        chosen = latents if len(self._wanted) == latents.shape[0] else latents[self._wanted]
        pixels = self.decoder(chosen.detach(), self.width, self.height)
        for row, image in zip(self._wanted, pixels, strict=True):
            sink, index = self.rows[row]  # type: ignore[misc]
            data, width, height = encode(image)
            sink(PreviewImage(step, total, index, data, PREVIEW_FORMAT, width, height))

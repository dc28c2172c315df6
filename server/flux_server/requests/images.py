"""Decoding and checking the images callers upload (edit sources, masks, VQA inputs).

Everything here runs before any model sees the data, so a bad upload costs a
header read, never a GPU call. Every failure is an :class:`ImageInputError` that
names the request field and says what is wrong, so the REST and gRPC adapters can
turn it into a 400 / INVALID_ARGUMENT without a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Collection, Iterable
from typing import Any, Final, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from flux_server.errors import MalformedRequest

#: Container formats accepted from callers. Others (PSD, ICO, EPS, ...) are
#: refused before their decoders run: fewer decoders, less attack surface.
ACCEPTED_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

#: Pixel modes that convert to RGB / L without guessing. 16-bit grayscale (as
#: 16-bit PNG masks are) keeps its high byte. 32-bit integer and float modes
#: (``I``, ``F``) would need a caller-chosen value range, so they are refused.
_SIXTEEN_BIT: Final[frozenset[str]] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ACCEPTED_MODES: Final[frozenset[str]] = (
    frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
    | _SIXTEEN_BIT
)

#: Default cap on decoded pixels: 4096 x 4096. FLUX works at up to ~2 MP; more
#: than this is almost surely a mistake or a decompression bomb.
DEFAULT_MAX_PIXELS: Final[int] = 4096 * 4096


class InputError(MalformedRequest):
    """A request value that cannot be used: reason ``malformed_request``, so 400 /
    INVALID_ARGUMENT through the wire contract's table (a
    :class:`~flux_server.errors.ServeError`).

    Attributes:
        field: the request field that carried the bad value (``image``, ``mask``, ...).
        message: what is wrong, as one sentence that starts with the field's name
            ("mask is 16x16 but the image is 32x16; ..."); never a stack trace.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}", field=field)
        self.field: str = field


class ImageInputError(InputError):
    """An uploaded image (or mask) cannot be used: not an image, truncated, too big, ..."""


def decode_image(
    data: bytes,
    field: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    mode: Literal["RGB", "L"] = "RGB",
) -> Image.Image:
    """Decode uploaded bytes into a fully loaded PIL image in ``mode``.

    The pixel count is checked from the header, before any pixel data is
    decoded, so a small file that claims a huge canvas is refused cheaply.
    EXIF orientation is applied (phone photos arrive rotated otherwise). For
    ``RGB``, transparency is composited onto white rather than dropped, since
    dropping alpha turns transparent areas into whatever colour they hide.
    Animated images yield their first frame.

    Args:
        data: the raw upload.
        field: the request field name, used in error messages.
        max_pixels: the largest ``width * height`` accepted.
        mode: ``RGB`` for pictures, ``L`` for masks.

    Raises:
        ImageInputError: empty data, not an image, unsupported format or mode,
            too many pixels, truncated or corrupt data.
    """
    if not data:
        raise ImageInputError(field, "is empty; send the image file's bytes")
    img = _open_header(data, field, max_pixels)
    _check_header(img, field, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL says "image file is truncated" / "broken data stream" here.
        raise ImageInputError(field, f"is truncated or corrupt: {exc}") from None
    return _to_mode(ImageOps.exif_transpose(img) or img, mode)


def _open_header(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """The image with only its header read."""
    try:
        # Image.open reads only the header. PIL's own bomb check (at twice its
        # global MAX_IMAGE_PIXELS) may already refuse a huge header here.
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageInputError(
            field, f"has too many pixels (the limit is {max_pixels} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise ImageInputError(
            field, f"is not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(field, f"could not be read: {exc}") from None


def _check_header(img: Image.Image, field: str, max_pixels: int) -> None:
    """Size and pixel mode, from the header, before any pixel is decoded."""
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageInputError(field, f"has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageInputError(
            field,
            f"is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels",
        )
    if img.mode not in ACCEPTED_MODES:
        raise ImageInputError(
            field,
            f"has pixel mode {img.mode!r}, which is not supported; "
            "send 8-bit RGB, RGBA, grayscale or palette images",
        )


def _to_mode(img: Image.Image, mode: Literal["RGB", "L"]) -> Image.Image:
    if img.mode in _SIXTEEN_BIT:
        # PIL's own I;16 -> L conversion clips at 255 instead of scaling.
        import numpy as np

        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
    if mode == "RGB" and ("A" in img.mode or "a" in img.mode or "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == mode:
        return img
    return img.convert(mode)


def check_mask(mask: Image.Image, size: tuple[int, int], field: str = "mask") -> None:
    """Check that an inpainting mask covers the image exactly.

    Raises:
        ImageInputError: the mask's size differs from ``size`` (width, height).
    """
    if mask.size != tuple(size):
        raise ImageInputError(
            field,
            f"is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}; "
            "the mask must have the image's size",
        )


def decode_mask(
    data: bytes,
    size: tuple[int, int],
    field: str = "mask",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode an inpainting mask as grayscale (white = repaint) and check its size.

    Raises:
        ImageInputError: as :func:`decode_image`, or the mask's size differs from ``size``.
    """
    mask = decode_image(data, field, max_pixels, mode="L")
    check_mask(mask, size, field)
    return mask


def decode_base64(value: object, field: str) -> bytes:
    """The bytes of an image sent as base64 text in a JSON body.

    A ``data:`` URL (``data:image/png;base64,...``, as browsers write them) is
    accepted too. The bytes are not decoded as an image here: :func:`decode_image`
    does that, with its own errors.

    Raises:
        ImageInputError: ``value`` is not a string or not valid base64.
    """
    if not isinstance(value, str):
        raise ImageInputError(field, f"must be a base64 string, not {type(value).__name__}")
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(field, "is not valid base64") from None


def image_schema(*, upload: bool) -> dict[str, Any]:
    """The OpenAPI schema of an image field: a file in a multipart form (``upload``),
    else base64 text in a JSON body (see :func:`decode_base64`)."""
    if upload:
        return {"type": "string", "format": "binary", "minLength": 1}
    return {
        "type": "string",
        "format": "byte",
        "minLength": 1,
        "description": "base64 (or a data: URL)",
    }


def check_upload_names(names: Iterable[str], accepted: Collection[str]) -> None:
    """Refuse uploaded files other than ``accepted`` rather than ignore them.

    Raises:
        ImageInputError: naming the first unexpected file.
    """
    for name in sorted(set(names) - set(accepted)):
        raise ImageInputError(
            name,
            f"was sent as a file, but only {', '.join(sorted(accepted))} may be; "
            "send other fields as text",
        )

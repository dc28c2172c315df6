"""Turning the caller's image arguments into the bytes that go on the wire."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image as PILImage

ImageArg = str | Path | bytes | bytearray | memoryview | PILImage.Image
"""A file path, encoded image bytes, or a PIL image."""


def image_bytes(value: ImageArg, field: str) -> bytes:
    """Encoded bytes for an image argument: files and bytes are sent as they are (the
    server decodes and checks them), PIL images are encoded losslessly as PNG."""
    if isinstance(value, PILImage.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str | Path):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{field}: no such file {str(path)!r}")
        return path.read_bytes()
    raise TypeError(f"{field} must be a path, bytes or a PIL image, not {type(value).__name__}")

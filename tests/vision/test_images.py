"""Upload decoding: every bad image is refused with an error naming the field."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from flux_server.requests.images import (
    ImageInputError,
    check_mask,
    check_upload_names,
    decode_base64,
    decode_image,
    decode_mask,
)
from flux_server.requests.results import encode


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def with_png_header_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to claim another canvas size (valid CRC, same pixel data)."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def test_decodes_png_to_rgb() -> None:
    img = decode_image(png_bytes(Image.new("RGB", (40, 24), (10, 20, 30))), "image", 10_000)
    assert img.mode == "RGB"
    assert img.size == (40, 24)
    assert img.getpixel((0, 0)) == (10, 20, 30)


def test_jpeg_and_webp_are_accepted() -> None:
    for fmt in ("JPEG", "WEBP"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 0, 0)).save(buf, format=fmt)
        assert decode_image(buf.getvalue(), "image", 10_000).size == (16, 16)


def test_transparency_is_composited_on_white() -> None:
    img = decode_image(png_bytes(Image.new("RGBA", (8, 8), (0, 0, 0, 0))), "image", 10_000)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (30, 10))
    exif = src.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: the picture is taller than stored
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue(), "image", 10_000).size == (10, 30)


def test_empty_upload() -> None:
    with pytest.raises(ImageInputError, match="empty") as err:
        decode_image(b"", "image", 10_000)
    assert err.value.field == "image"


def test_not_an_image() -> None:
    with pytest.raises(ImageInputError, match="not an image") as err:
        decode_image(b"hello, this is text", "image", 10_000)
    assert err.value.field == "image"


def test_refused_container_format() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="ICO")
    with pytest.raises(ImageInputError, match="not an image in an accepted format"):
        decode_image(buf.getvalue(), "image", 10_000)


def test_truncated_image() -> None:
    noisy = Image.effect_noise((64, 64), 50).convert("RGB")
    data = png_bytes(noisy)
    with pytest.raises(ImageInputError, match="truncated or corrupt") as err:
        decode_image(data[: len(data) // 2], "image", 10_000)
    assert err.value.field == "image"


def test_too_many_pixels_is_refused_from_the_header() -> None:
    # 3000x3000 claimed, but the file only holds 8x8 pixels of data: if the
    # pixels were decoded this would fail as "truncated", not on the limit.
    data = with_png_header_size(png_bytes(Image.new("RGB", (8, 8))), 3000, 3000)
    with pytest.raises(ImageInputError, match=r"3000x3000 = 9000000 pixels; the limit is 1000000"):
        decode_image(data, "image", 1_000_000)


def test_decompression_bomb_beyond_pil_limit() -> None:
    data = with_png_header_size(png_bytes(Image.new("RGB", (8, 8))), 60_000, 60_000)
    with pytest.raises(ImageInputError, match="too many pixels") as err:
        decode_image(data, "mask", 1_000_000)
    assert err.value.field == "mask"


def test_unsupported_mode() -> None:
    img = Image.new("F", (8, 8))
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    with pytest.raises(ImageInputError, match="pixel mode 'F'"):
        decode_image(buf.getvalue(), "image", 10_000)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    import numpy as np

    levels = np.array([[0, 0x8000, 0xFFFF]], dtype=np.uint16)
    mask = decode_mask(png_bytes(Image.fromarray(levels)), (3, 1))
    assert [mask.getpixel((x, 0)) for x in range(3)] == [0, 128, 255]
    assert decode_image(png_bytes(Image.fromarray(levels)), "image", 100).getpixel((1, 0)) == (
        128,
        128,
        128,
    )


def test_mask_decodes_to_grayscale_of_the_image_size() -> None:
    mask = decode_mask(png_bytes(Image.new("RGB", (32, 16), (255, 255, 255))), (32, 16))
    assert mask.mode == "L"
    assert mask.getpixel((0, 0)) == 255


def test_mask_of_wrong_size() -> None:
    with pytest.raises(ImageInputError, match="is 16x16 but the image is 32x16") as err:
        decode_mask(png_bytes(Image.new("L", (16, 16))), (32, 16))
    assert err.value.field == "mask"
    with pytest.raises(ImageInputError):
        check_mask(Image.new("L", (8, 8)), (8, 9))


def test_encode_round_trip() -> None:
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    assert decode_image(encode(img, "png"), "image", 100).getpixel((1, 1)) == (1, 2, 3)


def test_input_errors_are_400s_that_name_the_field() -> None:
    from flux_server.errors import status_of

    with pytest.raises(ImageInputError) as err:
        decode_image(b"GIF89a broken", "image", 10_000)
    assert status_of(err.value).http == 400
    assert status_of(err.value).grpc == "INVALID_ARGUMENT"
    assert err.value.to_json()["error"]["field"] == "image"
    assert err.value.message.startswith("image ")


def test_base64_images_from_json() -> None:
    import base64

    data = png_bytes(Image.new("RGB", (4, 4)))
    text = base64.b64encode(data).decode()
    assert decode_base64(text, "image") == data
    assert decode_base64(f"data:image/png;base64,{text}", "mask") == data
    with pytest.raises(ImageInputError, match="not valid base64") as err:
        decode_base64("not base64!", "mask")
    assert err.value.field == "mask"
    with pytest.raises(ImageInputError, match="must be a base64 string, not int"):
        decode_base64(5, "image")


def test_unexpected_uploads_are_refused() -> None:
    check_upload_names(["image", "mask"], ("image", "mask"))
    with pytest.raises(ImageInputError, match="only image, mask may be") as err:
        check_upload_names(["image", "masks"], ("image", "mask"))
    assert err.value.field == "masks"

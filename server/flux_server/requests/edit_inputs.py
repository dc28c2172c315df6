"""An edit request's uploads, decoded off the event loop, and the size its pipeline
call runs at."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_server.requests.edits import working_size
from flux_server.requests.images import decode_image
from flux_server.requests.params import GenerateParams

if TYPE_CHECKING:
    from PIL import Image

    from flux_server.requests.context import OffLoop


async def decode_edit_inputs(
    off_loop: OffLoop, image: bytes, mask: bytes | None, max_pixels: int
) -> tuple[Image.Image, Image.Image | None]:
    """The source image and the mask (greyscale), each refused over ``max_pixels``
    naming its field (``image``, ``mask``)."""
    source: Any = await off_loop(decode_image, image, "image", max_pixels)
    if mask is None:
        return source, None
    mask_image: Any = await off_loop(decode_image, mask, "mask", max_pixels, mode="L")
    return source, mask_image


def sized_for(
    params: GenerateParams, source_size: tuple[int, int], max_side: int
) -> GenerateParams:
    """``params`` with the size the pipeline runs at: the request's, else the source's
    snapped to 16 pixels and scaled to fit ``max_side``. Limits and defaults apply at
    that size; the result keeps the source's size."""
    auto_width, auto_height = working_size(source_size, max_side)
    return params.model_copy(
        update={"width": params.width or auto_width, "height": params.height or auto_height}
    )

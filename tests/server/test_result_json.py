"""The one JSON form of a generated image, as the result cache and the fleet queue's
outcomes store it (each under its own key for the bytes)."""

from __future__ import annotations

import json

import pytest

from flux_server.admission.result_blob import images_from_blob, images_to_blob
from flux_server.requests.results import GeneratedImage

IMAGES = [
    GeneratedImage(b"\x89PNG\x00\xff", "png", 64, 32, 7),
    GeneratedImage(b"", "webp", 8, 8, 0),
]


@pytest.mark.parametrize("key", ["b64", "data"])
def test_an_image_survives_its_json_form(key: str) -> None:
    for image in IMAGES:
        entry = json.loads(json.dumps(image.as_json(key)))
        assert set(entry) == {key, "format", "width", "height", "seed"}
        assert GeneratedImage.from_json(entry, key) == image


def test_the_cache_blob_keeps_every_image_in_order() -> None:
    blob = images_to_blob(IMAGES)
    assert json.loads(blob)[0]["b64"] == "iVBORwD/"
    assert images_from_blob(blob) == IMAGES

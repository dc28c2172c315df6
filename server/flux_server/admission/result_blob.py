"""How generated images are stored in the result cache: one JSON document of base64
images with their format, size and seed."""

from __future__ import annotations

import json

from flux_server.requests.results import GeneratedImage


def images_to_blob(images: list[GeneratedImage]) -> bytes:
    return json.dumps([i.as_json("b64") for i in images]).encode("utf-8")


def images_from_blob(blob: bytes) -> list[GeneratedImage]:
    return [GeneratedImage.from_json(entry, "b64") for entry in json.loads(blob)]

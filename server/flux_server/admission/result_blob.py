"""How generated images are stored in the result cache: one JSON document of base64
images with their format, size and seed."""

from __future__ import annotations

import base64
import json

from flux_server.requests.results import GeneratedImage


def images_to_blob(images: list[GeneratedImage]) -> bytes:
    return json.dumps(
        [
            {
                "b64": base64.b64encode(i.data).decode("ascii"),
                "format": i.format,
                "width": i.width,
                "height": i.height,
                "seed": i.seed,
            }
            for i in images
        ]
    ).encode("utf-8")


def images_from_blob(blob: bytes) -> list[GeneratedImage]:
    return [
        GeneratedImage(
            data=base64.b64decode(entry["b64"]),
            format=entry["format"],
            width=entry["width"],
            height=entry["height"],
            seed=entry["seed"],
        )
        for entry in json.loads(blob)
    ]

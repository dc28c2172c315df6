"""Work and results on the wire: what an entry carries and what a worker stores."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.scheduling.batch_items import BatchInfo


def entry(
    job: ResolvedRequest,
    request_id: str,
    key_id: str,
    *,
    priority: bool,
    timeout: float,
    result_ttl: float,
    previews: bool = False,
) -> dict[str, Any]:
    """An entry: the resolved request (seed included, so a redelivered entry makes the
    same images), who asked, and until when it is worth running."""
    now = time.time()
    return {
        "kind": "generate",
        "job": job.model_dump(mode="json"),
        "request_id": request_id,
        "key_id": key_id,
        "priority": priority,
        "enqueued": now,
        "deadline": now + timeout,
        "result_ttl": result_ttl,
        "previews": previews,
    }


def job_of(payload: Mapping[str, Any]) -> ResolvedRequest:
    return ResolvedRequest.model_validate(payload["job"])


def images_outcome(
    images: Sequence[GeneratedImage], info: BatchInfo, worker: str
) -> dict[str, Any]:
    return {
        "images": [
            {
                "data": base64.b64encode(i.data).decode(),
                "format": i.format,
                "width": i.width,
                "height": i.height,
                "seed": i.seed,
            }
            for i in images
        ],
        "batch_size": info.size,
        "units": info.units,
        "queue_s": info.queue_s,
        "run_s": info.run_s,
        "worker": worker,
    }


def error_outcome(code: str, message: str, worker: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}, "worker": worker}


def images_of(outcome: Mapping[str, Any]) -> tuple[list[GeneratedImage], BatchInfo]:
    images = [
        GeneratedImage(
            data=base64.b64decode(i["data"]),
            format=i["format"],
            width=i["width"],
            height=i["height"],
            seed=i["seed"],
        )
        for i in outcome["images"]
    ]
    info = BatchInfo(
        size=int(outcome["batch_size"]),
        units=int(outcome["units"]),
        queue_s=float(outcome["queue_s"]),
        run_s=float(outcome["run_s"]),
    )
    return images, info


def json_loads(data: str | bytes) -> dict[str, Any]:
    import json

    loaded = json.loads(data)
    return loaded if isinstance(loaded, dict) else {}

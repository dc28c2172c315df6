"""What a generation or an edit answers (:class:`GenerationResult`): the images, the
timings and the experiment arm. No framework, no torch."""

from __future__ import annotations

from dataclasses import dataclass

from flux_server.execution.engine import GeneratedImage
from flux_server.experiments.assignment import Assignment


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    request_id: str
    release: str
    model: str
    batch_size: int
    queue_ms: float
    inference_ms: float
    total_ms: float
    cache_hit: bool = False
    experiment: Assignment | None = None
    """The experiment arm that served the request; None outside any experiment."""

"""What a caller is told when the pipeline fails for its request."""

from __future__ import annotations

import torch

from flux_server.requests.params import ResolvedRequest
from flux_server.scheduling.runner import describe_failure
from flux_server.scheduling.work import Generation, Work


def work(width: int = 64, height: int = 64, num_images: int = 1) -> Work:
    job = ResolvedRequest(
        prompt="a city",
        negative_prompt=None,
        width=width,
        height=height,
        steps=2,
        guidance_scale=3.5,
        true_cfg_scale=1.0,
        seed=1,
        num_images=num_images,
        output_format="png",
        adapters=(),
        style_preset=None,
    )
    return Generation(request=job, request_id="request-1")


def test_out_of_memory_names_the_size_and_what_to_try() -> None:
    for error in (torch.cuda.OutOfMemoryError("CUDA out of memory"), MemoryError()):
        message = describe_failure(error, work(1024, 512, 2))
        assert "ran out of memory" in message and "1024x512, 2 image(s)" in message
        assert "smaller size or fewer images" in message


def test_other_failures_name_the_error_but_not_its_details() -> None:
    message = describe_failure(RuntimeError("/secret/path/model.safetensors"), work())
    assert "RuntimeError" in message and "request id" in message
    assert "/secret" not in message

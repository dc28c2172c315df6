"""On a CUDA device: the edit pipelines allocate no second copy of the weights, and
editing and VQA run in half precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from flux_server.execution.editor import Editor
from flux_server.execution.vqa import VqaModel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_editor_allocates_no_weights_on_the_gpu(tiny_flux_dir: Path) -> None:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir, dtype=torch.bfloat16).to("cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    editor = Editor(pipe)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    result = editor.img2img(Image.new("RGB", (50, 30)), "a cat", steps=2, strength=1.0, seed=1)
    assert result.images[0].size == (50, 30)


def test_vqa_answers_on_the_gpu(tiny_vqa_dir: Path) -> None:
    model = VqaModel.load(str(tiny_vqa_dir), "cuda")
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert model.model.dtype == half
    assert isinstance(model.answer(Image.new("RGB", (32, 32)), "what is this?", 4), str)

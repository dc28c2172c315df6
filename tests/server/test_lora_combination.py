"""LoRA adapters combined in one request on the hot-swap slot a compiled transformer uses:
fused (ranks side by side, scales folded in) they make the images PEFT's own combination
of the separately loaded adapters makes; a combination whose ranks exceed the slot is
refused at admission naming the flag and rank that lift it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flux_server.errors import InvalidRequest
from flux_server.requests.params import AdapterSlot, GenerateParams, resolve
from flux_server.settings import ServerSettings

SCALES = {"ink": 0.8, "neon": 0.5}


def _pictures(pipe, adapters: dict[str, float]) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    from flux_server.execution import lora

    lora.activate(pipe, adapters)
    generator = torch.Generator("cpu").manual_seed(7)
    out = pipe(
        "a lighthouse", width=64, height=64, num_inference_steps=2, generator=generator,
        output_type="np",
    )  # fmt: skip
    return np.asarray(out.images[0])


def test_a_fused_combination_makes_peft_s_images(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import FluxPipeline

    from flux_server.execution import lora, lora_hotswap

    def pipeline():  # type: ignore[no-untyped-def]
        return FluxPipeline.from_pretrained(str(tiny_model_dir), dtype=torch.float32)

    source = pipeline()
    specs = [
        lora.LoraSpec(
            name=name, path=str(lora.write_tiny_lora(source, tmp_path / name, name, rank=rank))
        )
        for name, rank in (("ink", 4), ("neon", 8))
    ]
    eager = pipeline()
    lora.load_adapters(eager, specs)
    slot = pipeline()
    lora_hotswap.attach(slot, 12)  # 4 + 8: the combination fits
    lora.load_adapters(slot, specs)

    want = _pictures(eager, SCALES)
    got = _pictures(slot, SCALES)
    assert np.abs(got - want).max() < 1e-4
    # The slot still serves one adapter, and none, after the combination.
    for one in ({"neon": 1.0}, {}):
        assert np.abs(_pictures(slot, one) - _pictures(eager, one)).max() < 1e-4
    assert np.abs(_pictures(slot, SCALES) - want).max() < 1e-4  # fused again


def test_a_combination_over_the_slot_names_the_rank_to_start_with() -> None:
    settings = ServerSettings(model="m")
    known = {"ink": 1.0, "neon": 1.0}
    slot = AdapterSlot({"ink": 4, "neon": 8}, rank=8)
    one = GenerateParams(prompt="x", adapters=[{"name": "neon"}])
    assert resolve(one, {}, settings, known, slot=slot).adapters == (("neon", 1.0),)
    both = GenerateParams(prompt="x", adapters=[{"name": "ink"}, {"name": "neon"}])
    with pytest.raises(InvalidRequest) as caught:
        resolve(both, {}, settings, known, slot=slot)
    assert caught.value.field == "adapters"
    assert "--lora-max-rank 12" in str(caught.value) and "without --compile" in str(caught.value)
    wide = AdapterSlot({"ink": 4, "neon": 8}, rank=12)
    assert len(resolve(both, {}, settings, known, slot=wide).adapters) == 2

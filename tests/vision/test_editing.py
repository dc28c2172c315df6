"""Editing with pipelines built from the loaded generator: sizes, seeds, shared weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from flux_server.execution.edit_job import (
    EditJob,
    EditJobError,
    InstructUnavailable,
    batch_key,
    seeds_for,
    snap,
)
from flux_server.execution.editor import Editor
from flux_server.requests.edits import (
    EditInputError,
    InstructEditingUnavailable,
    edit_job_from,
    edit_options,
    validate,
    working_size,
)

FAST: dict[str, Any] = {"steps": 2, "strength": 1.0}


@pytest.fixture(scope="module")
def kontext_dir(tmp_path_factory: pytest.TempPathFactory, flux_pipe: Any) -> Path:
    # Kontext's transformer has FLUX.1-dev's architecture; a bare transformer
    # directory (config.json at the root) is one of the accepted layouts.
    out = tmp_path_factory.mktemp("kontext")
    torch.manual_seed(1)
    type(flux_pipe.transformer).from_config(flux_pipe.transformer.config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def editor(flux_pipe: Any, kontext_dir: Path) -> Editor:
    return Editor(flux_pipe, kontext=str(kontext_dir))


@pytest.fixture(scope="module")
def plain_editor(flux_pipe: Any) -> Editor:
    return Editor(flux_pipe)


def picture(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def storage(module: torch.nn.Module) -> dict[str, int]:
    return {name: p.data_ptr() for name, p in module.state_dict().items()}


def test_edit_pipelines_share_the_generator_weights(editor: Editor, flux_pipe: Any) -> None:
    names = ("transformer", "vae", "text_encoder", "text_encoder_2")
    for pipe in (editor.img2img_pipe, editor.inpaint_pipe):
        for name in names:
            assert getattr(pipe, name) is getattr(flux_pipe, name)
            assert storage(getattr(pipe, name)) == storage(getattr(flux_pipe, name))
    kontext = editor.kontext_pipe
    for name in ("vae", "text_encoder", "text_encoder_2"):
        assert storage(getattr(kontext, name)) == storage(getattr(flux_pipe, name))
    # Kontext brings its own transformer, and only that.
    assert kontext.transformer is not flux_pipe.transformer
    ptrs = set(storage(flux_pipe.transformer).values())
    assert ptrs.isdisjoint(storage(kontext.transformer).values())


def test_snap_to_patches() -> None:
    assert snap((50, 30)) == (48, 32)
    assert snap((1, 7)) == (16, 16)
    assert snap((1024, 768)) == (1024, 768)


def test_working_size_fits_the_largest_side() -> None:
    assert working_size((50, 30), 2048) == (48, 32)
    assert working_size((4032, 3024), 2048) == (2048, 1536)
    assert working_size((3000, 200), 1024) == (1024, 64)
    assert working_size((5000, 5), 1000) == (992, 16)


def test_a_run_size_below_the_output_size(editor: Editor) -> None:
    job = EditJob(mode="img2img", image=picture((100, 40)), prompt="a", run_size=(48, 16), **FAST)
    tokens: list[int] = []

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        tokens.append(kwargs["hidden_states"].shape[1])

    hook = editor.img2img_pipe.transformer.register_forward_pre_hook(count, with_kwargs=True)
    try:
        result = editor.run(job)
    finally:
        hook.remove()
    # 48x16 pixels are 3x1 patches of 16; the result is scaled back to the output size.
    assert set(tokens) == {3}
    assert result.images[0].size == (100, 40)
    assert batch_key(job) != batch_key(EditJob(mode="img2img", image=job.image, prompt="a", **FAST))


def test_seeds_follow_generation() -> None:
    assert seeds_for(7, 3) == [7, 8, 9]
    drawn = seeds_for(None, 2)
    assert drawn[1] == drawn[0] + 1


def test_img2img_keeps_the_input_size_and_reports_seeds(editor: Editor) -> None:
    result = editor.img2img(picture((50, 30)), "a red house", seed=11, num_images=2, **FAST)
    assert [img.size for img in result.images] == [(50, 30), (50, 30)]
    assert result.seeds == [11, 12]
    assert all(img.mode == "RGB" for img in result.images)


def test_img2img_is_reproducible_per_seed(editor: Editor) -> None:
    src = picture((32, 32))
    a = editor.img2img(src, "a cat", seed=5, **FAST).images[0]
    b = editor.img2img(src, "a cat", seed=5, **FAST).images[0]
    c = editor.img2img(src, "a cat", seed=6, **FAST).images[0]
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_explicit_output_size(editor: Editor) -> None:
    result = editor.img2img(picture((40, 40)), "a tree", width=64, height=32, **FAST)
    assert result.images[0].size == (64, 32)


def test_inpaint_keeps_the_input_size(editor: Editor) -> None:
    mask = Image.new("L", (40, 56), 0)
    mask.paste(255, (10, 10, 30, 40))
    result = editor.inpaint(picture((40, 56)), mask, "a window", seed=3, **FAST)
    assert result.images[0].size == (40, 56)
    assert result.seeds == [3]


def test_inpaint_needs_a_mask_of_the_image_size(editor: Editor) -> None:
    with pytest.raises(EditJobError, match="mask must have the image's size") as err:
        editor.inpaint(picture((32, 32)), Image.new("L", (16, 16)), "x", **FAST)
    assert err.value.field == "mask"
    with pytest.raises(EditJobError, match="required for inpainting"):
        editor.run(EditJob(mode="inpaint", image=picture((32, 32)), prompt="x", **FAST))


def test_instruct_with_kontext_keeps_the_input_size(editor: Editor) -> None:
    assert editor.can_instruct
    result = editor.instruct(picture((48, 40)), "make it night", seed=1, steps=2)
    assert result.images[0].size == (48, 40)


def test_kontext_from_a_pipeline_layout(flux_pipe: Any, tiny_flux_dir: Path) -> None:
    # A directory laid out like FLUX.1-Kontext-dev keeps its transformer in a subfolder.
    assert Editor(flux_pipe, kontext=str(tiny_flux_dir)).can_instruct


def test_kontext_that_cannot_be_loaded(flux_pipe: Any, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"cannot load the Kontext transformer .*no such dir"):
        Editor(flux_pipe, kontext=str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="cannot load the Kontext transformer"):
        Editor(flux_pipe, kontext=str(tmp_path))  # a directory, but no model in it


def test_instruct_without_kontext_is_a_clear_error(plain_editor: Editor) -> None:
    assert not plain_editor.can_instruct
    with pytest.raises(InstructUnavailable, match="--kontext-model") as err:
        plain_editor.instruct(picture((32, 32)), "make it night", steps=2)
    assert err.value.field == "mode"
    # Asked for in a request, it is refused before queueing: 501, not the caller's fault.
    job = EditJob(mode="instruct", image=picture((32, 32)), prompt="make it night")
    with pytest.raises(InstructEditingUnavailable, match="--kontext-model") as refused:
        validate(job, kontext_available=False)
    assert refused.value.field == "mode" and refused.value.code == "unimplemented"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"prompt": "  "}, "prompt", "empty"),
        ({"strength": 0.0}, "strength", r"\(0, 1\]"),
        ({"strength": 1.5}, "strength", r"\(0, 1\]"),
        # Above 0, but steps * strength rounds away: diffusers would fail the call.
        ({"strength": 5e-324}, "strength", "leaves none of the 2 steps"),
        ({"steps": 0}, "steps", "at least 1"),
        ({"num_images": 0}, "num_images", "at least 1"),
        ({"width": -8}, "width", "positive"),
        ({"mask": Image.new("L", (32, 32))}, "mask", "only used for inpainting"),
        ({"mode": "instruct", "prompt": "make it night"}, "strength", "not used by instruction"),
    ],
)
def test_bad_edit_parameters(
    editor: Editor, changes: dict[str, Any], field: str, message: str
) -> None:
    params: dict[str, Any] = {"mode": "img2img", "image": picture((32, 32)), "prompt": "x"}
    params.update(FAST)
    params.update(changes)
    with pytest.raises(EditJobError, match=message) as err:
        editor.run(EditJob(**params))
    assert err.value.field == field
    # The request's check says the same before queueing, as a 400 naming the field.
    with pytest.raises(EditInputError, match=message) as refused:
        validate(EditJob(**params), kontext_available=True)
    assert refused.value.field == field and refused.value.code == "malformed_request"


def test_edit_options_from_a_form_or_json() -> None:
    assert edit_options({}) == (None, None)
    assert edit_options({"mode": "", "strength": ""}) == (None, None)
    assert edit_options({"mode": "inpaint", "strength": "0.5"}) == ("inpaint", 0.5)
    assert edit_options({"strength": 1}) == (None, 1.0)
    for bad in ("strong", True, [0.5]):
        with pytest.raises(EditInputError, match="must be a number") as err:
            edit_options({"strength": bad})
        assert err.value.field == "strength"
    with pytest.raises(EditInputError, match="must be one of") as err:
        edit_options({"mode": 2})
    assert err.value.field == "mode"


def test_compatible_jobs_run_in_one_call(editor: Editor) -> None:
    jobs = [
        EditJob(mode="img2img", image=picture((50, 30)), prompt="a", seed=1, **FAST),
        EditJob(mode="img2img", image=picture((48, 32)), prompt="b", seed=9, num_images=2, **FAST),
    ]
    assert batch_key(jobs[0]) == batch_key(jobs[1])
    steps: list[tuple[int, int]] = []
    results = editor.run_batch(jobs, on_step=lambda step, total: steps.append((step, total)))
    assert [r.seeds for r in results] == [[1], [9, 10]]
    assert [img.size for img in results[0].images] == [(50, 30)]
    assert [img.size for img in results[1].images] == [(48, 32), (48, 32)]
    assert steps == [(1, 2), (2, 2)]


def test_progress_counts_the_steps_that_run(editor: Editor) -> None:
    steps: list[tuple[int, int]] = []
    job = EditJob(mode="img2img", image=picture((32, 32)), prompt="a", steps=4, strength=0.5)
    editor.run(job, on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]


def test_incompatible_jobs_are_refused(editor: Editor) -> None:
    jobs = [
        EditJob(mode="img2img", image=picture((32, 32)), prompt="a", **FAST),
        EditJob(mode="img2img", image=picture((64, 32)), prompt="b", **FAST),
    ]
    with pytest.raises(ValueError, match="must share mode, size and settings"):
        editor.run_batch(jobs)


def test_seeds_wrap_like_generation() -> None:
    from flux_server.requests.params import MAX_SEED

    assert seeds_for(MAX_SEED, 2) == [MAX_SEED, 0]


def test_edit_job_from_a_resolved_request() -> None:
    from flux_server.requests.params import ResolvedRequest

    job = ResolvedRequest(
        prompt="a lighthouse, oil painting",
        negative_prompt="blurry",
        width=64,
        height=32,
        steps=3,
        guidance_scale=4.0,
        true_cfg_scale=1.0,
        seed=42,
        num_images=2,
        output_format="png",
        adapters=(("ink", 0.5),),
        style_preset=None,
    )
    src = picture((50, 30))
    plain = edit_job_from(job, image=src)
    assert (plain.mode, plain.effective_strength, plain.size) == ("img2img", 0.6, (50, 30))
    # The pipeline runs at the resolved (limit-checked) size.
    assert plain.pipeline_size == (64, 32)
    assert (plain.seed, plain.num_images, plain.steps, plain.adapters) == (42, 2, 3, job.adapters)
    # Without true CFG the negative prompt has no effect, as in generation.
    assert plain.negative_prompt is None
    masked = edit_job_from(job, image=src, mask=Image.new("L", (50, 30)), strength=0.3)
    assert (masked.mode, masked.strength) == ("inpaint", 0.3)
    sized = edit_job_from(job, image=src, mode="INSTRUCT", width=64, height=32)
    assert (sized.mode, sized.size) == ("instruct", (64, 32))


class AdapterLog:
    """An adapter hook that records what each batch activated."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []

    def __call__(self, adapters: dict[str, float]) -> None:
        self.calls.append(adapters)


def test_each_edit_batch_sets_its_adapters(flux_pipe: Any) -> None:
    hook = AdapterLog()
    editor = Editor(flux_pipe, set_adapters=hook)
    editor.img2img(picture((32, 32)), "a", **FAST)
    editor.img2img(picture((32, 32)), "a", adapters=(("ink", 0.7),), **FAST)
    # Edits without adapters turn the generator's off rather than inherit them.
    assert hook.calls == [{}, {"ink": 0.7}]


def test_adapters_without_a_hook_are_refused(plain_editor: Editor) -> None:
    with pytest.raises(EditJobError, match="no LoRA adapters") as err:
        plain_editor.img2img(picture((32, 32)), "a", adapters=(("ink", 1.0),), **FAST)
    assert err.value.field == "adapters"


def test_instruct_refuses_adapters(editor: Editor) -> None:
    with pytest.raises(EditJobError, match="not applied to instruction editing"):
        editor.instruct(picture((32, 32)), "make it night", steps=2, adapters=(("ink", 1.0),))


def test_edits_use_their_own_adapters_on_the_shared_transformer(
    tiny_flux_dir: Path, tmp_path: Path
) -> None:
    from diffusers import FluxPipeline

    from flux_server.execution import lora

    # A pipeline of its own: loading adapters changes its transformer.
    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    weights = lora.write_tiny_lora(pipe, tmp_path / "ink-lora", "ink")
    lora.load_adapters(pipe, [lora.LoraSpec(name="ink", path=str(weights))])
    editor = Editor(pipe, set_adapters=lambda adapters: lora.activate(pipe, adapters))
    src = picture((32, 32))

    def edit(**extra: Any) -> bytes:
        return editor.img2img(src, "a cat", seed=4, **FAST, **extra).images[0].tobytes()

    plain = edit()
    inked = edit(adapters=(("ink", 1.0),))
    assert inked != plain
    # A generation left the adapter on; an edit without adapters does not inherit it.
    lora.activate(pipe, {"ink": 1.0})
    assert edit() == plain


def test_half_precision_weights_stay_shared_and_half(tiny_flux_dir: Path) -> None:
    # diffusers' from_pipe casts the new pipeline to float32 unless told otherwise,
    # in place: that would double a bfloat16 generator's memory under it.
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir, dtype=torch.bfloat16)
    before = {name: storage(getattr(pipe, name)) for name in ("transformer", "vae")}
    editor = Editor(pipe, kontext=str(tiny_flux_dir))
    for name, ptrs in before.items():
        assert getattr(pipe, name).dtype == torch.bfloat16
        assert storage(getattr(pipe, name)) == ptrs
        assert storage(getattr(editor.img2img_pipe, name)) == ptrs
    assert editor.kontext_pipe.transformer.dtype == torch.bfloat16
    assert editor.img2img(picture((32, 32)), "a cat", **FAST).images[0].size == (32, 32)


def test_mixed_precision_pipelines_are_not_recast(tiny_flux_dir: Path) -> None:
    # A float32 VAE under a bfloat16 transformer is a common choice; keep both.
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir, dtype=torch.bfloat16)
    pipe.vae.to(torch.float32)
    editor = Editor(pipe)
    assert (pipe.transformer.dtype, pipe.vae.dtype) == (torch.bfloat16, torch.float32)
    assert editor.inpaint_pipe.vae is pipe.vae
    assert editor.inpaint_pipe.transformer is pipe.transformer

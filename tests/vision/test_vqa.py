"""Visual question answering with a tiny random BLIP model built locally."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from flux_server.execution.inputs import InputRejected
from flux_server.execution.vqa import MAX_TOKENS, VqaModel, VqaModelError
from flux_server.requests.questions import VqaInputError, question_fields, validate_question
from flux_server.tools.tiny_model import main as tiny_model_main

from .tiny_llava import write_tiny_llava

QUESTION = "What is the man holding in his right hand?"


@pytest.fixture(scope="module")
def vqa(tiny_vqa_dir: Path) -> VqaModel:
    return VqaModel.load(str(tiny_vqa_dir), "cpu")


def test_loads_blip_through_the_auto_classes(vqa: VqaModel) -> None:
    assert vqa.kind == "blip"
    assert type(vqa.model).__name__ == "BlipForQuestionAnswering"
    assert vqa.device == "cpu"


def test_answers_with_a_string(vqa: VqaModel) -> None:
    answer = vqa.answer(Image.new("RGB", (50, 40), (200, 10, 10)), QUESTION, max_tokens=8)
    assert isinstance(answer, str)
    assert answer == answer.strip()
    # Greedy decoding: the same question about the same image, the same answer.
    assert vqa.answer(Image.new("RGB", (50, 40), (200, 10, 10)), QUESTION, max_tokens=8) == answer


def test_max_tokens_bounds_the_answer(vqa: VqaModel) -> None:
    answer = vqa.answer(Image.new("RGB", (32, 32)), QUESTION, max_tokens=2)
    # Two word pieces decode to at most two words.
    assert len(answer.split()) <= 2
    assert len(vqa.answer(Image.new("RGB", (32, 32)), QUESTION, max_tokens=1).split()) <= 1


def test_grayscale_images_are_accepted(vqa: VqaModel) -> None:
    assert isinstance(vqa.answer(Image.new("L", (32, 32)), QUESTION, max_tokens=4), str)


@pytest.mark.parametrize(
    ("question", "max_tokens", "field", "message"),
    [
        ("", 8, "question", "empty"),
        ("   ", 8, "question", "empty"),
        ("x" * 5000, 8, "question", "the limit is"),
        (QUESTION, 0, "max_tokens", f"between 1 and {MAX_TOKENS}"),
        (QUESTION, MAX_TOKENS + 1, "max_tokens", f"between 1 and {MAX_TOKENS}"),
        (QUESTION, -3, "max_tokens", "not -3"),
    ],
)
def test_bad_questions(
    vqa: VqaModel, question: str, max_tokens: int, field: str, message: str
) -> None:
    # The model refuses it (a plain InputRejected of the torch layer) ...
    with pytest.raises(InputRejected, match=message) as rejected:
        vqa.answer(Image.new("RGB", (32, 32)), question, max_tokens)
    assert rejected.value.field == field
    # ... and so does the request's check before queueing, as a 400 naming the field.
    with pytest.raises(VqaInputError, match=message) as err:
        validate_question(question, max_tokens, vqa)
    assert err.value.field == field


def test_request_fields_from_a_form_or_json() -> None:
    assert question_fields({"question": QUESTION}) == (QUESTION, 64)
    assert question_fields({"question": QUESTION, "max_tokens": "8"}) == (QUESTION, 8)
    assert question_fields({"question": QUESTION, "max_tokens": ""}) == (QUESTION, 64)
    # An explicit 0 is out of range (validate_question says so), not the default.
    assert question_fields({"question": QUESTION, "max_tokens": 0}) == (QUESTION, 0)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"question": QUESTION, "max_tokens": 2.5}, "max_tokens", "must be an integer"),
        ({"question": QUESTION, "max_tokens": True}, "max_tokens", "must be an integer"),
        ({"question": QUESTION, "max_tokens": "many"}, "max_tokens", "must be an integer"),
        ({"question": 5}, "question", "must be text"),
        ({"question": QUESTION, "maxtokens": 8}, "maxtokens", "not a VQA field"),
    ],
)
def test_bad_request_fields(fields: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(VqaInputError, match=message) as err:
        question_fields(fields)
    assert err.value.field == field


def test_missing_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(VqaModelError, match=r"cannot load the VQA model .*: no such directory"):
        VqaModel.load(str(tmp_path / "nothing-here"), "cpu")


def test_a_model_that_is_not_vqa_is_refused(tiny_flux_dir: Path) -> None:
    with pytest.raises(VqaModelError, match="needs a BLIP VQA model"):
        VqaModel.load(str(tiny_flux_dir / "text_encoder"), "cpu")


def test_tiny_model_command_writes_a_servable_vqa_model(tmp_path: Path) -> None:
    assert tiny_model_main(["--vqa", str(tmp_path / "vqa")]) == 0
    model = VqaModel.load(str(tmp_path / "vqa"), "cpu")
    assert isinstance(model.answer(Image.new("RGB", (32, 32)), QUESTION, 4), str)


def test_image_text_to_text_models_answer_too(tmp_path: Path) -> None:
    model = VqaModel.load(str(write_tiny_llava(tmp_path / "llava")), "cpu")
    assert model.kind == "image-text-to-text"
    assert type(model.model).__name__ == "LlavaForConditionalGeneration"
    # The question goes through the processor's chat template.
    assert model._chat_prompt("what?") == "user: <image> what? assistant :"
    image = Image.new("RGB", (40, 30), (0, 90, 200))
    answer = model.answer(image, QUESTION, max_tokens=3)
    assert isinstance(answer, str)
    assert answer == model.answer(image, QUESTION, max_tokens=3)
    # Only the new tokens come back, never the prompt.
    assert "assistant" not in answer
    assert len(answer.split()) <= 3

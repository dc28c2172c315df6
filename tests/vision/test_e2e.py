"""Editing and VQA through a real server process (``python -m flux_server``) over real
sockets: REST, gRPC and the SDK, with tiny random FLUX, Kontext and BLIP models."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image
from rich_status import rich_error
from server_process import ServerProcess, start_server

from flux_client import FluxModelClient
from flux_client.errors import InvalidArgumentError
from flux_client.wire import pb, pb_grpc

from .test_images import png_bytes, with_png_header_size

QUESTION = "What is the man holding in his right hand?"
# Sizes that are no multiples of 16: the server snaps internally and resizes back.
SIZE = (50, 30)
FAST = {"steps": "2", "strength": "1.0"}


@contextlib.contextmanager
def running_server(base: Path, model: Path, *args: str) -> Iterator[ServerProcess]:
    server = start_server(model, base, args)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_flux_dir: Path, tiny_vqa_dir: Path
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("vision-server")
    with running_server(
        base,
        tiny_flux_dir,
        "--enable-editing",
        # Kontext's transformer has FLUX.1-dev's shape: the tiny pipeline's serves.
        "--kontext-model", str(tiny_flux_dir),
        "--vqa-model", str(tiny_vqa_dir),
        "--max-image-pixels", "1000000",
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.FluxServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield pb_grpc.FluxServiceStub(channel)


def photo(size: tuple[int, int] = SIZE) -> bytes:
    return png_bytes(Image.effect_noise(size, 40).convert("RGB"))


def mask(size: tuple[int, int] = SIZE) -> bytes:
    canvas = Image.new("L", size, 0)
    canvas.paste(255, (5, 5, size[0] // 2, size[1] // 2))
    return png_bytes(canvas)


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def assert_error(response: httpx.Response, status: int, field: str, text: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert text in error["message"], error


# -- REST ------------------------------------------------------------------------------


def test_rest_img2img_returns_the_input_size(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(), "image/png")},
        data={"prompt": "a red house", "seed": "7", "num_images": "2", **FAST},
        headers={"Accept": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert [(i["width"], i["height"], i["seed"]) for i in images] == [(*SIZE, 7), (*SIZE, 8)]
    assert all(size_of(base64.b64decode(i["b64"])) == SIZE for i in images)


def test_rest_inpaint_returns_a_png_of_the_input_size(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(), "image/png"), "mask": ("m.png", mask(), "image/png")},
        data={"prompt": "a window", "mode": "inpaint", **FAST},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert size_of(response.content) == SIZE
    assert int(response.headers["X-Seed"]) >= 0


def test_rest_edit_of_a_source_over_the_side_limit(server: ServerProcess) -> None:
    # Wider than --max-side (2048): edited at a size that fits, returned at the source's.
    wide = (2100, 40)
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(wide), "image/png")},
        data={"prompt": "a long fence", **FAST},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert size_of(response.content) == wide
    # A size the caller asks for is held to the limit, and named.
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(wide), "image/png")},
        data={"prompt": "a long fence", "width": "2112", **FAST},
        timeout=60,
    )
    assert_error(response, 422, "width", "2048")


def test_rest_instruct_returns_the_input_size(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(), "image/png")},
        data={"prompt": "make it night", "mode": "instruct", "steps": "2"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert size_of(response.content) == SIZE


def test_rest_vqa_multipart_and_json(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/vqa",
        files={"image": ("in.png", photo(), "image/png")},
        data={"question": QUESTION, "max_tokens": "8"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer = response.json()["answer"]
    assert isinstance(answer, str)
    response = httpx.post(
        f"{server.url}/vqa",
        json={"image": base64.b64encode(photo()).decode(), "question": QUESTION, "max_tokens": 8},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == answer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_rest_edit_takes_json_with_base64(server: ServerProcess) -> None:
    body = {"image": b64(photo()), "prompt": "a red house", "steps": 2, "strength": 1.0}
    response = httpx.post(
        f"{server.url}/edit", json={**body, "seed": 5}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 200, response.text
    [image] = response.json()["images"]
    assert (image["width"], image["height"], image["seed"]) == (*SIZE, 5)
    response = httpx.post(f"{server.url}/edit", json={**body, "mask": b64(mask())}, timeout=60)
    assert response.status_code == 200, response.text
    assert size_of(response.content) == SIZE
    bad_mask = {**body, "mask": b64(mask((16, 16)))}
    assert_error(httpx.post(f"{server.url}/edit", json=bad_mask), 400, "mask", "50x30")
    not_b64 = {**body, "image": "a photo"}
    assert_error(httpx.post(f"{server.url}/edit", json=not_b64), 400, "image", "base64")
    no_image = {k: v for k, v in body.items() if k != "image"}
    assert_error(httpx.post(f"{server.url}/edit", json=no_image), 422, "image", "send the image")


def test_rest_fields_are_used_or_refused_never_ignored(server: ServerProcess) -> None:
    image = {"image": ("in.png", photo(), "image/png")}
    response = httpx.post(
        f"{server.url}/edit",
        files={**image, "masks": ("m.png", mask(), "image/png")},
        data={"prompt": "a window", **FAST},
    )
    assert_error(response, 400, "masks", "only image, mask")
    response = httpx.post(
        f"{server.url}/edit", files=image, data={"prompt": "x", "question": "why?", **FAST}
    )
    assert_error(response, 422, "question", "Extra inputs")
    response = httpx.post(
        f"{server.url}/vqa", files=image, data={"question": QUESTION, "maxtokens": "8"}
    )
    assert_error(response, 400, "maxtokens", "not a VQA field")
    # JSON values are taken as sent: 0 tokens is out of range, not "the default".
    for value, text in ((0, "between 1 and"), (2.5, "must be an integer")):
        body = {"image": b64(photo()), "question": QUESTION, "max_tokens": value}
        assert_error(httpx.post(f"{server.url}/vqa", json=body), 400, "max_tokens", text)


def test_openapi_documents_the_edit_and_vqa_bodies(server: ServerProcess) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    edit = paths["/edit"]["post"]["requestBody"]["content"]
    assert set(edit) == {"multipart/form-data", "application/json"}
    form = edit["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary"
    assert form["properties"]["mode"]["enum"] == ["img2img", "inpaint", "instruct"]
    assert {"prompt", "seed", "steps", "strength", "mask"} <= set(form["properties"])
    assert edit["application/json"]["schema"]["properties"]["mask"]["format"] == "byte"
    vqa = paths["/vqa"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert vqa["required"] == ["image", "question"]
    # The loaded model's limit (the tiny VQA's positions), not the API's 512.
    assert vqa["properties"]["max_tokens"]["maximum"] == 64


@pytest.mark.parametrize(
    ("files", "field", "text"),
    [
        ({"image": b"this is not an image"}, "image", "not an image"),
        ({"image": photo()[:200]}, "image", "truncated"),
        (
            {"image": with_png_header_size(photo((8, 8)), 20_000, 20_000)},
            "image",
            "the limit is 1000000 pixels",
        ),
        ({"image": photo(), "mask": mask((16, 16))}, "mask", "the image is 50x30"),
        ({"image": photo(), "mask": b"GIF89a"}, "mask", "not an image"),
        ({"image": photo(), "mask": b""}, "mask", "is empty"),
    ],
    ids=[
        "not-an-image",
        "truncated",
        "decompression-bomb",
        "mask-size",
        "mask-not-an-image",
        "mask-empty",
    ],
)
def test_rest_edit_bad_images_are_400s(
    server: ServerProcess, files: dict[str, bytes], field: str, text: str
) -> None:
    response = httpx.post(
        f"{server.url}/edit",
        files={name: (f"{name}.png", data, "image/png") for name, data in files.items()},
        data={"prompt": "a window", **FAST},
        timeout=60,
    )
    assert_error(response, 400, field, text)


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"question": "", "max_tokens": "8"}, "question", "empty"),
        ({"question": QUESTION, "max_tokens": "100000"}, "max_tokens", "between 1 and"),
        ({"question": QUESTION, "max_tokens": "-1"}, "max_tokens", "between 1 and"),
    ],
)
def test_rest_vqa_bad_questions_are_400s(
    server: ServerProcess, fields: dict[str, str], field: str, text: str
) -> None:
    response = httpx.post(
        f"{server.url}/vqa",
        files={"image": ("in.png", photo(), "image/png")},
        data=fields,
        timeout=60,
    )
    assert_error(response, 400, field, text)


def test_rest_vqa_bad_image_is_a_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/vqa",
        files={"image": ("in.png", photo()[:100], "image/png")},
        data={"question": QUESTION},
        timeout=60,
    )
    assert_error(response, 400, "image", "truncated")


# -- gRPC ------------------------------------------------------------------------------


def test_grpc_edit_and_inpaint_return_the_input_size(stub: pb_grpc.FluxServiceStub) -> None:
    params = pb.GenerationParams(prompt="a red house", steps=2, seed=3)
    reply = stub.Edit(pb.EditRequest(image=photo(), strength=1.0, params=params), timeout=60)
    assert [(i.width, i.height, i.seed) for i in reply.images] == [(*SIZE, 3)]
    assert size_of(reply.images[0].data) == SIZE
    reply = stub.Edit(
        pb.EditRequest(
            image=photo(), mask=mask(), strength=1.0, mode=pb.EDIT_MODE_INPAINT, params=params
        ),
        timeout=60,
    )
    assert size_of(reply.images[0].data) == SIZE
    instruct = pb.EditRequest(image=photo(), mode=pb.EDIT_MODE_INSTRUCT, params=params)
    reply = stub.Edit(instruct, timeout=60)
    assert size_of(reply.images[0].data) == SIZE


def test_grpc_vqa_returns_a_string(stub: pb_grpc.FluxServiceStub) -> None:
    reply = stub.VQA(pb.VQARequest(image=photo(), question=QUESTION, max_tokens=8), timeout=60)
    assert isinstance(reply.answer, str)
    assert reply.request_id


def grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_grpc_bad_input_is_invalid_argument(stub: pb_grpc.FluxServiceStub) -> None:
    params = pb.GenerationParams(prompt="x", steps=2)
    error = grpc_error(lambda: stub.Edit(pb.EditRequest(image=b"nope", params=params), timeout=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an image" in error.details()
    assert rich_error(error).field == "image"
    bad_mask = pb.EditRequest(image=photo(), mask=mask((16, 16)), params=params)
    error = grpc_error(lambda: stub.Edit(bad_mask, timeout=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(error).field == "mask"
    error = grpc_error(lambda: stub.VQA(pb.VQARequest(image=photo(), question=" "), timeout=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(error).field == "question"


def pipeline_calls(server: ServerProcess) -> float:
    """Pipeline calls the server has made (generation, edit and VQA batches)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "fluxserve_batch_size":
            return next(s.value for s in family.samples if s.name.endswith("_count"))
    raise AssertionError("no fluxserve_batch_size metric")


def test_bad_input_never_reaches_a_pipeline(
    server: ServerProcess, stub: pb_grpc.FluxServiceStub
) -> None:
    before = pipeline_calls(server)
    bomb = with_png_header_size(photo((8, 8)), 20_000, 20_000)
    params = pb.GenerationParams(prompt="a window", steps=2)
    edits = [
        pb.EditRequest(image=b"not an image", params=params),
        pb.EditRequest(image=photo()[:200], params=params),
        pb.EditRequest(image=bomb, params=params),
        pb.EditRequest(image=photo(), mask=mask((16, 16)), params=params),
    ]
    for request in edits:
        error = grpc_error(lambda request=request: stub.Edit(request, timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        rest = httpx.post(
            f"{server.url}/edit",
            json={
                "image": b64(request.image),
                **({"mask": b64(request.mask)} if request.HasField("mask") else {}),
                "prompt": "a window",
                "steps": 2,
            },
        )
        assert rest.status_code == 400, rest.text
    questions = [("", 8), (QUESTION, -1), (QUESTION, 100_000)]
    for question, max_tokens in questions:
        request = pb.VQARequest(image=photo(), question=question, max_tokens=max_tokens)
        error = grpc_error(lambda request=request: stub.VQA(request, timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        rest = httpx.post(
            f"{server.url}/vqa",
            json={"image": b64(photo()), "question": question, "max_tokens": max_tokens},
        )
        assert rest.status_code == 400, rest.text
    assert pipeline_calls(server) == before
    # ... while a good question is one call.
    stub.VQA(pb.VQARequest(image=photo(), question=QUESTION, max_tokens=2), timeout=60)
    assert pipeline_calls(server) == before + 1


@pytest.fixture(scope="module")
def plain_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_flux_dir: Path
) -> Iterator[ServerProcess]:
    """Editing without Kontext, no VQA model; batches of two edits."""
    with running_server(
        tmp_path_factory.mktemp("plain-server"), tiny_flux_dir, "--enable-editing",
        # A batch of two runs as soon as it is full: the long delay only matters if
        # the second request came ten seconds after the first.
        "--max-batch-size", "2", "--max-delay-ms", "10000",
    ) as running:  # fmt: skip
        yield running


def test_compatible_edits_share_a_pipeline_call(plain_server: ServerProcess) -> None:
    def edit(prompt: str) -> httpx.Response:
        return httpx.post(
            f"{plain_server.url}/edit",
            files={"image": ("in.png", photo(), "image/png")},
            data={"prompt": prompt, **FAST},
            headers={"Accept": "application/json"},
            timeout=120,
        )

    # The engine takes the first edit at once (it is idle); the others arrive while it
    # runs and share the next call: batch sizes like [1, 2, 2], or [3, 3, 3].
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(edit, ["a red house", "a blue house", "a green house"]))
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["images"][0]["width"] == SIZE[0]
    sizes = [response.json()["batch_size"] for response in responses]
    assert max(sizes) >= 2, sizes
    assert all(sizes.count(size) % size == 0 for size in sizes), sizes


def test_features_the_server_was_not_started_with(plain_server: ServerProcess) -> None:
    response = httpx.post(
        f"{plain_server.url}/edit",
        files={"image": ("in.png", photo(), "image/png")},
        data={"prompt": "make it night", "mode": "instruct"},
        timeout=60,
    )
    assert_error(response, 501, "mode", "--kontext-model")
    response = httpx.post(
        f"{plain_server.url}/vqa",
        files={"image": ("in.png", photo(), "image/png")},
        data={"question": QUESTION},
        timeout=60,
    )
    assert response.status_code == 501, response.text
    assert "--vqa-model" in response.json()["error"]["message"]


def test_unknown_edit_mode_is_a_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(), "image/png")},
        data={"prompt": "a window", "mode": "sketch", **FAST},
        timeout=60,
    )
    assert_error(response, 400, "mode", "img2img, inpaint, instruct")


def test_a_mask_outside_inpainting_is_refused(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/edit",
        files={"image": ("in.png", photo(), "image/png"), "mask": ("m.png", mask(), "image/png")},
        data={"prompt": "a window", "mode": "img2img", **FAST},
        timeout=60,
    )
    assert_error(response, 400, "mask", "only used for inpainting")


# -- SDK -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_generate_ask_edit(server: ServerProcess, transport: str, tmp_path: Path) -> None:
    port = server.http_port if transport == "http" else server.grpc_port
    client = FluxModelClient(host="127.0.0.1", port=port, transport=transport)  # type: ignore[arg-type]
    try:
        path = tmp_path / "generated.png"
        client.generate(prompt="a man with a briefcase", width=64, height=48, output_path=path)
        # The article's call, as written: a path, a question, max_tokens.
        answer = client.vqa(image=str(path), question=QUESTION, max_tokens=8)
        assert isinstance(answer, str)
        # Bytes and PIL images are the same picture: the same (greedy) answer.
        assert client.vqa(image=path.read_bytes(), question=QUESTION, max_tokens=8) == answer
        assert client.vqa(image=Image.open(path), question=QUESTION, max_tokens=8) == answer
        source = Image.open(path).resize(SIZE)
        edited = client.edit(image=source, prompt="a silver briefcase", strength=1.0, steps=2)
        assert edited.size == SIZE
        inpainted = client.edit(
            image=photo(), prompt="a window", mask=mask(), strength=1.0, steps=2
        )
        assert inpainted.size == SIZE
        with pytest.raises(InvalidArgumentError) as err:
            client.vqa(image=b"not an image", question=QUESTION)
        assert err.value.field == "image"
    finally:
        client.close()


# -- The article's chain, as the example script runs it ------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "understand_then_generate.py"


def _load_example() -> Any:
    # examples/ is a folder of scripts, not a package: load the file the user would run.
    spec = importlib.util.spec_from_file_location("understand_then_generate", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


close_up_prompt = _load_example().close_up_prompt


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_example_asks_then_generates_what_it_heard(
    server: ServerProcess, transport: str, tmp_path: Path
) -> None:
    source, output = tmp_path / "input_image.png", tmp_path / "detail.png"
    # A fixed picture: with the tiny model's seeded weights and greedy decoding, a
    # fixed answer, so the test always takes the same path through the script.
    source.write_bytes(png_bytes(Image.linear_gradient("L").resize((64, 48)).convert("RGB")))
    port = server.http_port if transport == "http" else server.grpc_port
    command = [
        sys.executable, str(EXAMPLE), str(source),
        "--port", str(port), "--host", "127.0.0.1", "--transport", transport,
        "--output", str(output), "--width", "32", "--height", "32", "--steps", "2",
        "--max-tokens", "6",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Q: {QUESTION}"
    answer = lines[1].removeprefix("A: ")
    # The tiny VQA model's words are random; what matters is that whatever it said
    # became the prompt of the image the script wrote.
    prompt = close_up_prompt(answer)
    assert prompt is not None, f"the tiny model answered {answer!r}: pick another picture"
    assert lines[2] == f"Generated {output} (32x32): {prompt!r}"
    assert Image.open(output).size == (32, 32)


def test_example_names_a_missing_image(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(missing)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"no such image file: {missing}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("answer", "prompt"),
    [
        ("a briefcase", "a close-up of a briefcase on a wooden table, studio lighting"),
        (
            "He is holding a silver briefcase.",
            "a close-up of a silver briefcase on a wooden table, studio lighting",
        ),
        ("  umbrella ", "a close-up of umbrella on a wooden table, studio lighting"),
        ("nothing", None),
        ("", None),
    ],
)
def test_close_up_prompt_takes_the_object_from_the_answer(answer: str, prompt: str | None) -> None:
    assert close_up_prompt(answer) == prompt

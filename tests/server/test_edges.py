"""Clean answers at the edges, against a real server with the tiny VQA model: every
``$ref`` of /openapi.json resolves, JSON sent under another media type is 415, /edit and
/vqa document their errors, and VQA input the API accepts but the loaded model cannot
take is a 400 naming the field and the model's limit (read from its config)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from server_process import ServerProcess


@pytest.fixture(scope="module")
def server(server_factory: Any, tiny_model_dir: Path, tiny_vqa_dir: Path) -> ServerProcess:
    args = ["--vqa-model", str(tiny_vqa_dir), "--enable-editing"]
    started: ServerProcess = server_factory(tiny_model_dir, args)
    return started


def _refs(node: Any, path: str = "#") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append((path, value))
            else:
                found.extend(_refs(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_refs(value, f"{path}/{i}"))
    return found


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def test_every_openapi_ref_resolves(server: ServerProcess) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    refs = _refs(document)
    dangling = []
    for where, ref in refs:
        try:
            _resolve(document, ref)
        except AssertionError:
            dangling.append(f"{where}: {ref}")
    assert not dangling, dangling
    # The request bodies of /generate and /edit (JSON and multipart) describe their
    # adapters through the document's components.
    for path, media in (
        ("/generate", "application/json"),
        ("/edit", "application/json"),
        ("/edit", "multipart/form-data"),
    ):
        body = document["paths"][path]["post"]["requestBody"]["content"][media]
        adapters = body["schema"]["properties"]["adapters"]["items"]
        if "$ref" in adapters:
            adapters = _resolve(document, adapters["$ref"])
        assert adapters["properties"]["name"]["type"] == "string", (path, media)
    assert "$defs" not in str(document)


def test_edit_and_vqa_document_their_errors(server: ServerProcess) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path in ("/edit", "/vqa"):
        answers = paths[path]["post"]["responses"]
        assert {"200", "400", "413", "415", "422"} <= answers.keys(), (path, answers.keys())
        error = answers["400"]["content"]["application/json"]["schema"]
        assert error["required"] == ["error"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_json_under_another_media_type_is_415(server: ServerProcess, content_type: str) -> None:
    answer = httpx.post(
        f"{server.url}/generate",
        content=b'{"prompt": "a cat"}',
        headers={"Content-Type": content_type},
    )
    assert answer.status_code == 415, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unsupported_media_type" and error["field"] == "Content-Type"
    assert "application/json" in error["message"] and content_type in error["message"]


def test_uploads_refuse_a_body_that_is_neither_form_nor_json(server: ServerProcess) -> None:
    answer = httpx.post(
        f"{server.url}/vqa", content=b"question=hi", headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 415
    assert "multipart/form-data" in answer.json()["error"]["message"]


def test_json_with_a_charset_is_still_json(server: ServerProcess) -> None:
    answer = httpx.post(
        f"{server.url}/generate",
        content=b'{"prompt": "a cat", "steps": 1000}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status_code == 422  # read, and refused for its steps


def _image_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.parametrize(
    ("question", "max_tokens", "field", "limit"),
    [
        ("what colour is it? " * 105, 8, "question", "at most 64"),  # 1,995 characters
        ("what colour is it?", 512, "max_tokens", "at most 64"),
    ],
)
def test_vqa_input_past_the_model_s_positions_is_400(
    server: ServerProcess, question: str, max_tokens: int, field: str, limit: str
) -> None:
    body = {"image": _image_b64(), "question": question, "max_tokens": max_tokens}
    answer = httpx.post(f"{server.url}/vqa", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and limit in error["message"]


def test_vqa_at_the_model_s_limit_answers(server: ServerProcess) -> None:
    body = {"image": _image_b64(), "question": "what colour is it?", "max_tokens": 64}
    answer = httpx.post(f"{server.url}/vqa", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["answer"], str)


# -- the schema says what the server does --------------------------------------------------


def _png() -> bytes:
    return base64.b64decode(_image_b64())


def test_the_schema_says_what_the_server_refuses(server: ServerProcess) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    edit = paths["/edit"]["post"]["requestBody"]["content"]
    vqa = paths["/vqa"]["post"]["requestBody"]["content"]
    feedback = paths["/feedback"]["post"]["requestBody"]["content"]["application/json"]
    # A form has no null: "null" for width is refused, so the form schema has no null.
    width = edit["multipart/form-data"]["schema"]["properties"]["width"]
    assert width["type"] == "integer" and "anyOf" not in width
    refused = httpx.post(
        f"{server.url}/edit",
        files={"image": ("a.png", _png(), "image/png")},
        data={"prompt": "a cat", "width": "null"},
        timeout=60,
    )
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "width"
    # An empty image is refused: every image property needs a byte.
    for body in (*edit.values(), *vqa.values()):
        assert body["schema"]["properties"]["image"]["minLength"] == 1
    empty = httpx.post(
        f"{server.url}/vqa",
        files={"image": ("a.png", b"", "image/png")},
        data={"question": "what colour?"},
        timeout=60,
    )
    assert empty.status_code == 400 and empty.json()["error"]["field"] == "image"
    # An empty request id is refused by /feedback.
    request_id = feedback["schema"]["properties"]["request_id"]
    assert (request_id["minLength"], request_id["maxLength"]) == (1, 128)
    no_id = httpx.post(f"{server.url}/feedback", json={"request_id": "", "event": "like"})
    assert no_id.status_code == 422 and no_id.json()["error"]["field"] == "request_id"
    # max_tokens: the loaded model writes at most 64 (its config), not the API's 512.
    for body in vqa.values():
        assert body["schema"]["properties"]["max_tokens"]["maximum"] == 64
    over = httpx.post(
        f"{server.url}/vqa",
        json={"image": _image_b64(), "question": "what colour?", "max_tokens": 65},
        timeout=60,
    )
    assert over.status_code == 400 and over.json()["error"]["field"] == "max_tokens"


def test_a_second_image_part_is_refused_not_ignored(server: ServerProcess) -> None:
    answer = httpx.post(
        f"{server.url}/edit",
        files=[
            ("image", ("a.png", _png(), "image/png")),
            ("image", ("b.png", _png(), "image/png")),
        ],
        data={"prompt": "a cat"},
        timeout=60,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "image" and "more than one 'image'" in error["message"]

"""The two SDK errors a real server had no way to trigger, each from a real server
process over both transports, with the wire status the contract's reason table gives:

- ``PermissionDeniedError`` (403 / PERMISSION_DENIED, field ``priority``): a key without
  the priority permission asking for the priority lane on a server started with
  ``--priority-without-permission refuse``;
- ``ServerError`` (500 / INTERNAL): the image safety model fails on every image (its
  preprocessor makes 48-pixel inputs for a 32-pixel ViT), and the server fails closed:
  the request fails, no image is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess, add_key, start_server

from flux_client import FluxModelClient, PermissionDeniedError, ServerError
from flux_contract.reasons import REASONS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_flux_dir: Path) -> Iterator[
    tuple[ServerProcess, str, str]
]:  # fmt: skip
    from transformers import ViTImageProcessor

    from flux_server.tools.tiny_image_safety import write_tiny_image_safety

    root = tmp_path_factory.mktemp("contract-errors")
    broken = write_tiny_image_safety(root / "classifier")
    ViTImageProcessor(size={"height": 48, "width": 48}).save_pretrained(broken)
    keys = root / "keys"
    plain, priority = add_key(keys, "alice"), _priority_key(keys, "ops")
    process = start_server(
        tiny_flux_dir,
        root,
        ["--api-keys", str(keys), "--priority-without-permission", "refuse",
         "--image-safety-model", str(broken), "--failed-auth-burst", "0"],
    )  # fmt: skip
    try:
        process.wait_ready()
        yield process, plain, priority
    finally:
        process.stop()


def _priority_key(key_file: Path, user: str) -> str:
    """A key with the priority permission, made by the real ``keys add --priority``."""
    import contextlib
    import io

    from flux_server.admission import keys

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert keys.main(["add", user, "--priority", "--file", str(key_file)]) == 0
    return next(word for word in out.getvalue().split() if word.startswith("fxs_"))


def _client(server: ServerProcess, transport: str, key: str) -> FluxModelClient:
    port = server.grpc_port if transport == "grpc" else server.http_port
    return FluxModelClient(
        host="127.0.0.1", port=port, transport=transport, api_key=key, timeout=120
    )


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_priority_without_the_permission_is_permission_denied(
    server: tuple[ServerProcess, str, str], transport: str
) -> None:
    process, plain, _ = server
    with _client(process, transport, plain) as client, pytest.raises(
        PermissionDeniedError
    ) as caught:  # fmt: skip
        client.generate(prompt="a lighthouse", priority="high")
    wire = REASONS["permission_denied"]
    assert caught.value.field == "priority"
    assert (caught.value.http_status or caught.value.grpc_code) in (wire.http, wire.grpc)


def test_permission_denied_on_the_wire(server: tuple[ServerProcess, str, str]) -> None:
    process, plain, _ = server
    answer = httpx.post(
        f"{process.url}/generate",
        json={"prompt": "a lighthouse"},
        headers={"Authorization": f"Bearer {plain}", "X-Priority": "high"},
        timeout=60,
    )
    assert answer.status_code == REASONS["permission_denied"].http == 403
    assert answer.json()["error"]["code"] == "permission_denied"
    assert answer.json()["error"]["field"] == "priority"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_failing_image_safety_model_is_a_server_error_and_sends_nothing(
    server: tuple[ServerProcess, str, str], transport: str
) -> None:
    process, _, priority = server
    with _client(process, transport, priority) as client, pytest.raises(
        ServerError
    ) as caught:  # fmt: skip
        client.generate(prompt="a lighthouse", priority="high")  # the key may: admitted
    wire = REASONS["internal"]
    assert (caught.value.http_status or caught.value.grpc_code) in (wire.http, wire.grpc)
    assert "request id" in caught.value.message

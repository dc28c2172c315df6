"""The SDK against the real server (``python -m flux_server``) with the tiny random FLUX,
over both transports: full results, presets, streaming, API keys, the safety filter,
overload and deadlines as the typed errors callers catch."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from server_process import start_server

from flux_client import (
    AsyncFluxModelClient,
    AuthenticationError,
    ContentRejectedError,
    DeadlineExceededError,
    FluxModelClient,
    InvalidArgumentError,
    NotEnabledError,
    OverloadedError,
    PermissionDeniedError,
    Progress,
    StylePreset,
)
from flux_client.presets import presets_to_files
from flux_client.types import GenerationResult

pytestmark = pytest.mark.slow
TRANSPORTS = ["grpc", "http"]
RELEASE = "v9.9.9-sdk"
PRESETS = {
    "ink": StylePreset(prompt_template="{prompt}, ink drawing", steps=2, width=256, height=272),
}


@dataclass
class Server:
    http_port: int
    grpc_port: int
    alice: str  # may use the priority lane
    bob: str
    model: str

    def client(self, transport: str, key: str | None = None, **kwargs: object) -> FluxModelClient:
        port = self.grpc_port if transport == "grpc" else self.http_port
        return FluxModelClient(
            host="127.0.0.1",
            port=port,
            transport=transport,  # type: ignore[arg-type]
            api_key=key,
            **kwargs,  # type: ignore[arg-type]
        )

    def async_client(self, transport: str, key: str) -> AsyncFluxModelClient:
        port = self.grpc_port if transport == "grpc" else self.http_port
        return AsyncFluxModelClient(
            host="127.0.0.1",
            port=port,
            transport=transport,  # type: ignore[arg-type]
            api_key=key,
            timeout=120,
        )


def _new_key(keys_file: Path, user: str, *flags: str) -> str:
    from flux_server import keys

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, *flags, "--file", str(keys_file)]) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from flux_server.tiny_model import write_tiny_flux

    root = tmp_path_factory.mktemp("sdk-server")
    model = write_tiny_flux(root / "model")
    presets = root / "presets"
    presets.mkdir()
    for name, content in presets_to_files(PRESETS).items():
        (presets / name).write_text(content)
    keys_file = root / "keys"
    alice, bob = _new_key(keys_file, "alice", "--priority"), _new_key(keys_file, "bob")
    blocklist = root / "blocklist.txt"
    blocklist.write_text("zebra crossing\n")
    process = start_server(
        model,
        root,
        [
            "--metrics-port", "0",
            "--release", RELEASE,
            "--presets-dir", str(presets),
            "--api-keys", str(keys_file),
            "--blocklist", str(blocklist),
            "--cache-bytes", "0",
            "--max-batch-size", "1",
            "--max-queue", "2",
            "--log-level", "warning",
        ],
    )  # fmt: skip
    try:
        # The SDK's own readiness wait, through each transport's health check.
        running = Server(process.http_port, process.grpc_port, alice, bob, str(model))
        for transport in TRANSPORTS:
            with running.client(transport) as probe:
                probe.wait_until_ready(timeout=120, poll=0.2)
        yield running
    except Exception:
        print(process.log())
        raise
    finally:
        process.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_result(server: Server, transport: str) -> None:
    with server.client(transport, server.alice, timeout=120) as client:
        result = client.generate_images("a lighthouse", num_images=2, seed=5, width=32)
        again = client.generate_images("a lighthouse", num_images=2, seed=5, width=32)
    assert isinstance(result, GenerationResult)
    assert result.seeds == [5, 6]
    assert [(i.width, i.height) for i in result.images] == [(32, 64), (32, 64)]
    assert [i.to_pil().size for i in result.images] == [(32, 64), (32, 64)]
    assert result.release == RELEASE and result.model == server.model
    assert result.batch_size >= 1 and result.timings.total_ms > 0 and result.request_id
    assert [i.data for i in again.images] == [i.data for i in result.images]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_presets_listed_and_applied(server: Server, transport: str) -> None:
    with server.client(transport, server.bob, timeout=120) as client:
        assert client.list_presets() == PRESETS
        image = client.generate("a cat", style_preset="ink")
    assert image.size == (256, 272)


def test_stream_reports_every_step_then_the_result(server: Server) -> None:
    with server.client("grpc", server.bob, timeout=120) as client:
        events = list(client.stream("a cat", steps=3, seed=1))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == [1, 2, 3]
    assert {p.total_steps for p in progress} == {3}
    assert isinstance(events[-1], GenerationResult) and events[-1].seeds == [1]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_keys_and_the_priority_lane(server: Server, transport: str) -> None:
    with server.client(transport) as client, pytest.raises(AuthenticationError):
        client.generate("a cat")
    with server.client(transport, "fxs_not_a_key") as client, pytest.raises(AuthenticationError):
        client.generate("a cat")
    # A key without the priority permission is refused (PermissionDeniedError) or served
    # in the normal lane, as the server chooses; never an unmapped error.
    bob = server.client(transport, server.bob, timeout=120)
    with bob, contextlib.suppress(PermissionDeniedError):
        assert bob.generate("a cat", priority="high").size == (64, 64)
    with server.client(transport, server.alice, timeout=120) as client:
        assert client.generate("a cat", priority="high").size == (64, 64)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"width": 100}, "width"),
        ({"style_preset": "nope"}, "style_preset"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_input_names_the_field(
    server: Server, transport: str, kwargs: dict[str, object], field: str
) -> None:
    client = server.client(transport, server.bob)
    with client, pytest.raises(InvalidArgumentError) as caught:
        client.generate("a cat", **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_blocked_prompt_is_a_field_named_rejection(server: Server, transport: str) -> None:
    client = server.client(transport, server.bob)
    with client, pytest.raises(InvalidArgumentError) as caught:
        client.generate("a zebra crossing at night")
    assert caught.value.field == "prompt"
    if transport == "http":  # the REST body carries the code that picks the subclass
        assert isinstance(caught.value, ContentRejectedError)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_short_timeout_is_a_deadline_error(server: Server, transport: str) -> None:
    client = server.client(transport, server.bob, timeout=0.05)
    with client, pytest.raises(DeadlineExceededError):
        client.generate("a cat", width=256, height=256, steps=40)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_overload_raises_overloaded_with_retry_after(server: Server, transport: str) -> None:
    """One image at a time and two waiting: eight at once cannot all be accepted."""
    async with server.async_client(transport, server.bob) as client:
        outcomes = await asyncio.gather(
            *(client.generate(f"a cat {i}", width=128, height=128, steps=4) for i in range(8)),
            return_exceptions=True,
        )
    overloaded = [o for o in outcomes if isinstance(o, OverloadedError)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert overloaded and done, outcomes
    assert all(o.retry_after is not None and o.retry_after >= 1 for o in overloaded)
    assert len(overloaded) + len(done) == len(outcomes), outcomes


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_features_the_server_was_not_started_with(server: Server, transport: str) -> None:
    photo = Image.new("RGB", (64, 64), (90, 120, 200))
    with server.client(transport, server.bob) as client:
        with pytest.raises(NotEnabledError, match="--vqa-model"):
            client.vqa(image=photo, question="What is in the picture?")
        with pytest.raises(NotEnabledError, match="--enable-editing"):
            client.edit(photo, "make it night")

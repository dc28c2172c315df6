"""The blocking SDK over both transports, against small real servers on real sockets."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from wire_fakes import DEFAULT_SEED, DEFAULT_SIZE, FakeServers

from flux_client import (
    DeadlineExceededError,
    FluxError,
    FluxModelClient,
    InvalidArgumentError,
    OverloadedError,
    Progress,
    RetryPolicy,
    StylePreset,
    UnavailableError,
    UnsupportedError,
)
from flux_client.types import GenerationResult

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
TRANSPORTS = ["grpc", "http"]


def client_for(
    fakes: FakeServers, transport: str, *, retry: RetryPolicy = FAST_RETRY, **kwargs: object
) -> FluxModelClient:
    return FluxModelClient(
        host="127.0.0.1",
        port=fakes.port(transport),
        transport=transport,  # type: ignore[arg-type]
        retry=retry,
        **kwargs,  # type: ignore[arg-type]
    )


def _png(size: tuple[int, int] = (48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_named_transport_is_used_without_asking(transport: str) -> None:
    with FluxModelClient(host="127.0.0.1", port=_closed_port(), transport=transport) as client:  # type: ignore[arg-type]
        assert client.transport == transport


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # bound but not listening: connections are refused


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A port that accepts connections and closes them at once: neither REST nor gRPC."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def test_auto_on_a_port_that_speaks_neither_names_transport(hangs_up: int) -> None:
    with FluxModelClient(host="127.0.0.1", port=hangs_up, timeout=10) as client:
        with pytest.raises(FluxError, match=r"transport='http'.*transport='grpc'"):
            client.generate("a cat")
        assert "transport='auto'" in repr(client)  # nothing was guessed


def test_auto_with_nothing_listening_is_unavailable_and_not_ready() -> None:
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
    with FluxModelClient(host="127.0.0.1", port=_closed_port(), retry=retry, timeout=5) as client:
        assert client.is_ready(timeout=1) is False
        with pytest.raises(UnavailableError, match="REST or gRPC"):
            client.generate("a cat")


def test_unknown_transport_and_bad_addresses_are_rejected() -> None:
    with pytest.raises(ValueError, match="transport"):
        FluxModelClient(transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="host name"):
        FluxModelClient(host="http://localhost:8080")
    with pytest.raises(ValueError, match="port"):
        FluxModelClient(port=80800)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_generate_returns_a_pil_image_and_writes_output_path(
    fakes: FakeServers, transport: str, tmp_path: Path
) -> None:
    out = tmp_path / "city.png"
    with client_for(fakes, transport) as client:
        image = client.generate(
            prompt="a futuristic city at sunset", width=128, height=96, seed=7, output_path=out
        )
    assert image.size == (128, 96)
    assert image.info["seed"] == 7
    assert image.info["request_id"]
    written = Image.open(out)
    assert written.format == "PNG" and written.size == (128, 96)
    # Unset fields stay unset on the wire, so the server's preset/default applies.
    (record,) = fakes.script.seen
    assert record["prompt"] == "a futuristic city at sunset"
    assert "steps" not in record and "guidance_scale" not in record
    assert "negative_prompt" not in record and "style_preset" not in record


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_output_path_suffix_picks_the_format(
    fakes: FakeServers, transport: str, tmp_path: Path
) -> None:
    out = tmp_path / "photo.jpg"
    with client_for(fakes, transport) as client:
        client.generate(prompt="a cat", output_path=out)
    assert fakes.script.seen[0]["output_format"] == "jpeg"
    assert Image.open(out).format == "JPEG"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_generate_images_carries_every_parameter_and_the_full_result(
    fakes: FakeServers, transport: str
) -> None:
    with client_for(fakes, transport) as client:
        result = client.generate_images(
            "a lighthouse",
            negative_prompt="blurry",
            width=64,
            height=64,
            steps=4,
            guidance_scale=3.5,
            true_cfg_scale=2.0,
            style_preset="cyberpunk",
            seed=2**40,
            num_images=3,
            output_format="WEBP",
            adapters={"neon": 0.5},
        )
    assert isinstance(result, GenerationResult)
    assert result.seeds == [2**40, 2**40 + 1, 2**40 + 2]
    assert [i.format.value for i in result.images] == ["webp"] * 3
    assert result.images[0].to_pil().format == "WEBP"
    assert result.batch_size == 1 and result.model == "fake" and result.release
    assert result.timings.total_ms == 3.5 and result.cache_hit is False
    (record,) = fakes.script.seen
    assert record["negative_prompt"] == "blurry"
    assert record["steps"] == 4
    assert record["guidance_scale"] == 3.5 and record["true_cfg_scale"] == 2.0
    assert record["style_preset"] == "cyberpunk" and record["num_images"] == 3
    assert record["adapters"] == [{"name": "neon", "scale": 0.5}]
    assert "priority" not in record


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_same_seed_gives_the_same_bytes(fakes: FakeServers, transport: str) -> None:
    with client_for(fakes, transport) as client:
        first = client.generate_images("a cat", seed=11).images[0].data
        again = client.generate_images("a cat", seed=11).images[0].data
        other = client.generate_images("a cat", seed=12).images[0].data
    assert first == again != other


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_priority_and_api_key_travel(fakes: FakeServers, transport: str) -> None:
    with client_for(fakes, transport, api_key="s3cret") as client:
        client.generate("a cat", priority="high")
    (record,) = fakes.script.seen
    assert record["priority"] == "high"
    assert record["authorization"] == "Bearer s3cret"
    assert "fluxserve-client/" in record["user_agent"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unavailable_is_retried_with_backoff(fakes: FakeServers, transport: str) -> None:
    fakes.script.fail_next[:] = ["unavailable", "unavailable"]
    with client_for(fakes, transport) as client:
        image = client.generate("a cat")
    assert image.size == (DEFAULT_SIZE, DEFAULT_SIZE)
    assert fakes.script.calls("generate") == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retries_share_one_request_id_that_errors_carry(fakes: FakeServers, transport: str) -> None:
    fakes.script.fail_next[:] = ["unavailable", "overloaded"]
    with client_for(fakes, transport) as client, pytest.raises(OverloadedError) as exc:
        client.generate("a cat")
    first, second = fakes.script.seen
    assert first["request_id"] and first["request_id"] == second["request_id"]
    assert exc.value.request_id == first["request_id"]
    with client_for(fakes, transport) as client:
        client.generate("a cat")
    assert fakes.script.seen[2]["request_id"] != first["request_id"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retries_stop_after_max_attempts(fakes: FakeServers, transport: str) -> None:
    fakes.script.fail_next[:] = ["unavailable"] * 5
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
    with (
        client_for(fakes, transport, retry=retry) as client,
        pytest.raises(UnavailableError) as exc,
    ):
        client.generate("a cat")
    assert fakes.script.calls("generate") == 2
    assert exc.value.message == "model not ready"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("failure", ["overloaded", "internal"])
def test_only_unavailable_is_retried(fakes: FakeServers, transport: str, failure: str) -> None:
    fakes.script.fail_next[:] = [failure]
    with client_for(fakes, transport) as client, pytest.raises(FluxError) as exc:
        client.generate("a cat")
    assert not isinstance(exc.value, UnavailableError)
    assert fakes.script.calls("generate") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeout_is_a_deadline_error(fakes: FakeServers, transport: str) -> None:
    fakes.script.fail_next[:] = ["hang"]
    client = client_for(fakes, transport, timeout=0.5)
    with client, pytest.raises(DeadlineExceededError):
        client.generate("a cat")
    assert fakes.script.calls("generate") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nothing_listening_is_unavailable(transport: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
        client = FluxModelClient(
            host="127.0.0.1",
            port=port,
            transport=transport,  # type: ignore[arg-type]
            retry=retry,
            timeout=10,
        )
        with client, pytest.raises(UnavailableError):
            client.generate("a cat")


def test_client_side_type_errors_name_the_field() -> None:
    with FluxModelClient(port=1) as client:
        with pytest.raises(InvalidArgumentError) as exc:
            client.generate("a cat", width="wide")  # type: ignore[arg-type]
        assert exc.value.field == "width"
        with pytest.raises(InvalidArgumentError, match="output_format"):
            client.generate("a cat", output_format="gif")
        with pytest.raises(InvalidArgumentError) as exc:
            client.generate("a cat", seed=-1)
        assert exc.value.field == "seed"
        with pytest.raises(InvalidArgumentError) as exc:
            client.generate("a cat", width=2**40)
        assert exc.value.field == "width"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_list_presets(fakes: FakeServers, transport: str) -> None:
    with client_for(fakes, transport) as client:
        presets = client.list_presets()
    assert set(presets) == {"cyberpunk", "plain"}
    cyberpunk = presets["cyberpunk"]
    assert isinstance(cyberpunk, StylePreset)
    assert cyberpunk.expand("a cat") == "a cat, neon, cyberpunk"
    assert cyberpunk.steps == 12 and cyberpunk.lora is not None and cyberpunk.lora.name == "neon"
    assert presets["plain"].negative_prompt is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_edit_sends_image_mask_and_mode(fakes: FakeServers, transport: str, tmp_path: Path) -> None:
    source = Image.new("RGB", (80, 48), (200, 10, 10))
    mask = _png((80, 48))
    out = tmp_path / "edited.png"
    with client_for(fakes, transport) as client:
        edited = client.edit(
            source,
            "make it blue",
            mask=mask,
            strength=0.6,
            mode="inpaint",
            seed=5,
            output_path=out,
        )
    assert edited.size == (80, 48)
    assert Image.open(out).size == (80, 48)
    (record,) = fakes.script.seen
    assert Image.open(io.BytesIO(record["image"])).size == (80, 48)
    assert record["mask"] == mask
    assert record["strength"] == pytest.approx(0.6)
    assert record["mode"] == "inpaint"
    assert record["prompt"] == "make it blue" and record["seed"] == 5


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vqa_takes_a_path_bytes_or_pil_image(
    fakes: FakeServers, transport: str, tmp_path: Path
) -> None:
    path = tmp_path / "input_image.jpg"
    Image.new("RGB", (40, 30)).save(path, format="JPEG")
    question = "What is the man holding in his right hand?"
    with client_for(fakes, transport) as client:
        for image in (str(path), path.read_bytes(), Image.open(path)):
            answer = client.vqa(image=image, question=question, max_tokens=64)
            assert answer == f"a 40x30 image; you asked: {question}"
        with pytest.raises(InvalidArgumentError) as exc:
            client.vqa(image=path, question=" ")
        assert exc.value.field == "question"
        with pytest.raises(FileNotFoundError, match="image"):
            client.vqa(image=tmp_path / "missing.jpg", question=question)
    assert [r["max_tokens"] for r in fakes.script.seen][:3] == [64, 64, 64]


def test_stream_yields_progress_then_the_result(fakes: FakeServers) -> None:
    with client_for(fakes, "grpc") as client:
        events = list(client.stream("a cat", steps=3, seed=DEFAULT_SEED))
    assert [e.step for e in events[:-1] if isinstance(e, Progress)] == [1, 2, 3]
    assert all(isinstance(e, Progress) and e.total_steps == 3 for e in events[:-1])
    result = events[-1]
    assert isinstance(result, GenerationResult) and result.seeds == [DEFAULT_SEED]


def test_stream_retries_before_the_first_event(fakes: FakeServers) -> None:
    fakes.script.fail_next[:] = ["unavailable"]
    with client_for(fakes, "grpc") as client:
        events = list(client.stream("a cat", steps=2))
    assert isinstance(events[-1], GenerationResult)
    assert fakes.script.calls("stream") == 2


def test_stream_over_http_says_it_needs_grpc(fakes: FakeServers) -> None:
    with client_for(fakes, "http") as client, pytest.raises(UnsupportedError, match="gRPC"):
        next(iter(client.stream("a cat")))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_readiness(fakes: FakeServers, transport: str) -> None:
    with client_for(fakes, transport) as client:
        assert client.is_ready()
        client.wait_until_ready(timeout=5)
        fakes.script.ready = False
        assert not client.is_ready()
        with pytest.raises(UnavailableError, match="not ready"):
            client.wait_until_ready(timeout=0.3, poll=0.05)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nothing_listening_is_not_ready(transport: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with FluxModelClient(host="127.0.0.1", port=port, transport=transport) as client:  # type: ignore[arg-type]
            assert not client.is_ready(timeout=1)


def test_http_tells_the_server_the_time_left(fakes: FakeServers) -> None:
    with client_for(fakes, "http", timeout=42) as client:
        client.generate("a cat")
    (record,) = fakes.script.seen
    assert 0 < float(record["deadline"]) <= 42

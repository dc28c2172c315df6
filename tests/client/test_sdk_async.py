"""The asyncio client over both transports, against the fake servers on real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image
from wire_fakes import FakeServers

from flux_client import (
    AsyncFluxModelClient,
    OverloadedError,
    Progress,
    RetryPolicy,
    UnsupportedError,
)
from flux_client.types import GenerationResult

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
TRANSPORTS = ["grpc", "http"]


def client_for(fakes: FakeServers, transport: str) -> AsyncFluxModelClient:
    return AsyncFluxModelClient(
        host="127.0.0.1",
        port=fakes.port(transport),
        transport=transport,  # type: ignore[arg-type]
        retry=FAST_RETRY,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_generate_concurrently_and_write_output(
    fakes: FakeServers, transport: str, tmp_path: Path
) -> None:
    async with client_for(fakes, transport) as client:
        images = await asyncio.gather(
            *(client.generate(f"cat {i}", width=32, height=48, seed=i) for i in range(4))
        )
        await client.generate("dog", seed=9, output_path=tmp_path / "dog.png")
    assert [image.info["seed"] for image in images] == [0, 1, 2, 3]
    assert all(image.size == (32, 48) for image in images)
    assert Image.open(tmp_path / "dog.png").format == "PNG"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retries_then_errors(fakes: FakeServers, transport: str) -> None:
    fakes.script.fail_next[:] = ["unavailable", "unavailable", "overloaded"]
    async with client_for(fakes, transport) as client:
        with pytest.raises(OverloadedError):
            await client.generate_images("a cat")
        result = await client.generate_images("a cat", num_images=2)
    assert result.seeds == [1234, 1235]
    assert fakes.script.calls("generate") == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_edit_vqa_and_presets(fakes: FakeServers, transport: str) -> None:
    source = Image.new("RGB", (64, 32))
    async with client_for(fakes, transport) as client:
        edited = await client.edit(source, "brighter", strength=0.3)
        answer = await client.vqa(image=source, question="what is it?", max_tokens=8)
        presets = await client.list_presets()
    assert edited.size == (64, 32)
    assert answer.startswith("a 64x32 image")
    assert "cyberpunk" in presets
    assert fakes.script.seen[0]["strength"] == pytest.approx(0.3)
    assert fakes.script.seen[1]["max_tokens"] == 8


async def test_stream_over_grpc(fakes: FakeServers) -> None:
    async with client_for(fakes, "grpc") as client:
        events = [event async for event in client.stream("a cat", steps=2)]
    assert [type(e) for e in events] == [Progress, Progress, GenerationResult]


async def test_stream_over_http_says_it_needs_grpc(fakes: FakeServers) -> None:
    async with client_for(fakes, "http") as client:
        with pytest.raises(UnsupportedError):
            async for _ in client.stream("a cat"):
                pass


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_readiness(fakes: FakeServers, transport: str) -> None:
    async with client_for(fakes, transport) as client:
        await client.wait_until_ready(timeout=5)
        fakes.script.ready = False
        assert not await client.is_ready()

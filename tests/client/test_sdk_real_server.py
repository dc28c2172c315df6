"""The SDK against the real server (``python -m flux_server``) with the tiny random FLUX,
over both transports: full results, presets, streaming. The error contract is in
test_error_contract.py, against the same server."""

from __future__ import annotations

import pytest
from real_server import PRESETS, RELEASE, TRANSPORTS, Server

from flux_client import AsyncFluxModelClient, FluxModelClient, Progress
from flux_client.types import GenerationResult

pytestmark = pytest.mark.slow


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
def test_priority_without_the_permission_is_served_in_the_normal_lane(
    server: Server, transport: str
) -> None:
    for key in (server.bob, server.alice):
        with server.client(transport, key, timeout=120) as client:
            assert client.generate("a cat", priority="high").size == (64, 64)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auto_finds_the_protocol_of_each_port(server: Server, transport: str) -> None:
    """The server's ports are free ports here, never the defaults: no guessing by number."""
    port = server.grpc_port if transport == "grpc" else server.http_port
    with FluxModelClient("127.0.0.1", port, api_key=server.bob, timeout=120) as client:
        assert client.generate("a cat").size == (64, 64)
        assert client.transport == transport
    async with AsyncFluxModelClient("127.0.0.1", port, api_key=server.bob) as aclient:
        assert aclient.transport == "auto"
        assert await aclient.is_ready()
        assert aclient.transport == transport

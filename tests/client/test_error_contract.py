"""The error contract, against the real server (``python -m flux_server``, tiny model):
every SDK error class the server can cause, over gRPC and REST, from the blocking and the
asyncio client — the same class, the same ``field`` and ``code``, ``retry_after`` on
overload. The server's own words travel unchanged: no fake server decides any of it."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from real_server import BLOCKED_PROMPT, TRANSPORTS, Server
from server_process import ServerProcess, start_server

from flux_client import (
    AsyncFluxModelClient,
    AuthenticationError,
    ContentRejectedError,
    DeadlineExceededError,
    FluxError,
    FluxModelClient,
    InvalidArgumentError,
    NotEnabledError,
    OverloadedError,
    RetryPolicy,
    UnavailableError,
)

pytestmark = pytest.mark.slow
PHOTO = Image.new("RGB", (64, 64), (90, 120, 200))


@dataclass(frozen=True)
class Case:
    """One refusal: what to call, as whom, and what must come back."""

    error: type[FluxError]
    code: str | None
    field: str | None
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str | None = "bob"
    timeout: float = 120.0


CASES = {
    "out_of_range": Case(
        InvalidArgumentError, "invalid_argument", "width", "generate", ("a cat",), {"width": 100}
    ),
    "zero_steps": Case(
        InvalidArgumentError, "invalid_argument", "steps", "generate", ("a cat",), {"steps": 0}
    ),
    "unknown_preset": Case(
        InvalidArgumentError,
        "unknown_name",
        "style_preset",
        "generate",
        ("a cat",),
        {"style_preset": "nope"},
    ),
    "blocked_prompt": Case(
        ContentRejectedError, "content_rejected", "prompt", "generate", (BLOCKED_PROMPT,), {}
    ),
    "no_key": Case(
        AuthenticationError, "unauthenticated", "authorization", "generate", ("a cat",), {}, None
    ),
    "bad_key": Case(
        AuthenticationError,
        "unauthenticated",
        "authorization",
        "generate",
        ("a cat",),
        {},
        "fxs_not_a_key",
    ),
    "vqa_off": Case(
        NotEnabledError, "unimplemented", "question", "vqa", (PHOTO, "What is it?"), {}
    ),
    "editing_off": Case(NotEnabledError, "unimplemented", "mode", "edit", (PHOTO, "night"), {}),
    "deadline": Case(
        DeadlineExceededError,
        None,
        None,
        "generate",
        ("a cat",),
        {"width": 256, "height": 256, "steps": 40},
        timeout=0.05,
    ),
}


def _key(server: Server, case: Case) -> str | None:
    return getattr(server, case.key, case.key) if case.key else None


def _port(server: Server, transport: str) -> int:
    return server.grpc_port if transport == "grpc" else server.http_port


def _sync(server: Server, transport: str, case: Case) -> FluxError:
    client = FluxModelClient(
        "127.0.0.1",
        _port(server, transport),
        transport,  # type: ignore[arg-type]
        api_key=_key(server, case),
        timeout=case.timeout,
    )
    with client, pytest.raises(FluxError) as caught:
        getattr(client, case.method)(*case.args, **case.kwargs)
    return caught.value


async def _async(server: Server, transport: str, case: Case) -> FluxError:
    client = AsyncFluxModelClient(
        "127.0.0.1",
        _port(server, transport),
        transport,  # type: ignore[arg-type]
        api_key=_key(server, case),
        timeout=case.timeout,
    )
    async with client:
        with pytest.raises(FluxError) as caught:
            await getattr(client, case.method)(*case.args, **case.kwargs)
    return caught.value


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_refusal_is_the_same_error_everywhere(server: Server, name: str) -> None:
    case = CASES[name]
    seen: dict[str, FluxError] = {}
    for transport in TRANSPORTS:
        seen[f"{transport}/sync"] = await asyncio.to_thread(_sync, server, transport, case)
        seen[f"{transport}/async"] = await _async(server, transport, case)
    for where, error in seen.items():
        assert type(error) is case.error, (where, error)
        assert error.field == case.field, (where, error)
        assert error.message, where
        if case.code is not None:
            assert error.code == case.code, (where, error)
            assert error.request_id, where


def _flood(server: Server, transport: str, mode: str) -> list[object]:
    """Eight images at once on a server that runs one and queues two."""
    prompts = [f"a cat {i}" for i in range(8)]
    kwargs = {"width": 128, "height": 128, "steps": 4}
    port = _port(server, transport)
    if mode == "sync":
        client = FluxModelClient("127.0.0.1", port, transport, api_key=server.bob, timeout=120)  # type: ignore[arg-type]

        def one(prompt: str) -> object:
            try:
                return client.generate(prompt, **kwargs)  # type: ignore[arg-type]
            except FluxError as error:
                return error

        with client, ThreadPoolExecutor(len(prompts)) as pool:
            return list(pool.map(one, prompts))

    async def flood() -> list[object]:
        client = AsyncFluxModelClient(
            "127.0.0.1",
            port,
            transport,
            api_key=server.bob,
            timeout=120,  # type: ignore[arg-type]
        )
        async with client:
            calls = (client.generate(p, **kwargs) for p in prompts)  # type: ignore[arg-type]
            return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(flood())


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_overload_is_overloaded_with_retry_after(server: Server, transport: str, mode: str) -> None:
    outcomes = _flood(server, transport, mode)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert refused and len(refused) < len(outcomes), outcomes
    for error in refused:
        assert type(error) is OverloadedError, error
        assert error.code == "resource_exhausted" and error.field is None
        assert error.retry_after is not None and error.retry_after >= 1


def test_a_draining_server_is_unavailable(tiny_flux_dir: Path, tmp_path: Path) -> None:
    """A server told to stop refuses new work, retryable, over both transports; with
    retries off the caller sees ``UnavailableError`` at once."""
    process = start_server(tiny_flux_dir, tmp_path, ["--drain-timeout", "60"])
    try:
        process.wait_ready()
        endless = {"prompt": "endless", "width": 1024, "height": 1024, "steps": 100}
        with ThreadPoolExecutor(1) as pool:
            pool.submit(httpx.post, f"{process.url}/generate", json=endless, timeout=120)
            _wait(lambda: _gauge(process, "fluxserve_requests_running") >= 1)
            process.process.send_signal(signal.SIGTERM)
            _wait(lambda: httpx.get(f"{process.url}/readyz", timeout=5).status_code == 503)
            once = RetryPolicy(max_attempts=1)
            for transport, port in (("http", process.http_port), ("grpc", process.grpc_port)):
                with (
                    FluxModelClient("127.0.0.1", port, transport, retry=once) as client,  # type: ignore[arg-type]
                    pytest.raises(FluxError) as caught,
                ):
                    client.generate("too late")
                assert type(caught.value) is UnavailableError, (transport, caught.value)
                assert caught.value.code == "unavailable" and caught.value.retryable
            process.process.kill()  # ends the endless request, so the pool can close
    finally:
        process.process.kill()
        process.process.wait()


def _gauge(process: ServerProcess, name: str) -> float:
    for line in httpx.get(f"{process.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)

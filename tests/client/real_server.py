"""One real fluxserve server (``python -m flux_server``, tiny random FLUX) for the SDK
tests: API keys (alice may use the priority lane, bob may not), a blocklist, one image at a
time with two waiting, and a style preset."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_process import start_server

from flux_client import AsyncFluxModelClient, FluxModelClient, StylePreset
from flux_client.presets import presets_to_files

TRANSPORTS = ["grpc", "http"]
RELEASE = "v9.9.9-sdk"
PRESETS = {
    "ink": StylePreset(prompt_template="{prompt}, ink drawing", steps=2, width=256, height=272),
}
BLOCKED_PROMPT = "a zebra crossing at night"


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
    from flux_server.admission import keys

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, *flags, "--file", str(keys_file)]) == 0
    return out.getvalue().strip()


def running_server(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("sdk-server")
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

"""``python -m flux_client`` against the fake servers (in-process, real sockets)."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from wire_fakes import FakeServers

from flux_client.__main__ import main


def _args(fakes: FakeServers, transport: str) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(fakes.port(transport)), "--transport", transport]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_generate_edit_vqa_presets_ready(
    fakes: FakeServers, transport: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _args(fakes, transport)
    out = tmp_path / "city.jpg"
    assert main([*base, "generate", "a city", "-o", str(out), "--seed", "3", "--width", "32"]) == 0
    assert Image.open(out).format == "JPEG" and Image.open(out).size == (32, 64)
    assert "seed=3" in capsys.readouterr().out

    many = tmp_path / "many.png"
    assert main([*base, "generate", "a city", "-o", str(many), "--num-images", "2"]) == 0
    assert (tmp_path / "many-1.png").exists() and (tmp_path / "many-2.png").exists()

    edited = tmp_path / "edited.png"
    assert main([*base, "edit", str(out), "at night", "-o", str(edited), "--strength", "0.5"]) == 0
    assert Image.open(edited).size == (32, 64)

    capsys.readouterr()
    assert main([*base, "vqa", str(out), "what is it?"]) == 0
    assert capsys.readouterr().out.startswith("a 32x64 image")

    assert main([*base, "presets"]) == 0
    assert json.loads(capsys.readouterr().out)["cyberpunk"]["steps"] == 12

    assert main([*base, "ready", "--wait", "5"]) == 0
    fakes.script.ready = False
    assert main([*base, "ready"]) == 1


def test_refusals_exit_1_with_the_message(
    fakes: FakeServers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.script.api_key = "k"
    base = _args(fakes, "http")
    assert main([*base, "generate", "a cat", "-o", "/dev/null"]) == 1
    assert "API key" in capsys.readouterr().err
    monkeypatch.setenv("FLUXSERVE_API_KEY", "k")
    assert main([*base, "generate", "a cat", "-o", "/dev/null", "--width", "100"]) == 1
    err = capsys.readouterr().err
    assert "multiple of 16" in err and "width" in err
    assert main([*base, "vqa", "/no/such/file.png", "what?"]) == 2


def _progress_steps(err: str) -> list[str]:
    return [part.split(" [")[0] for part in err.split("\r") if part.startswith("step ")]


def test_generate_shows_each_step_over_grpc(
    fakes: FakeServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "a.png")
    base = [*_args(fakes, "grpc"), "generate", "a city", "-o", out]
    assert main([*base, "--steps", "3", "--progress", "always"]) == 0
    assert _progress_steps(capsys.readouterr().err) == ["step 1/3", "step 2/3", "step 3/3"]
    assert main([*base, "--progress", "never"]) == 0
    assert "step" not in capsys.readouterr().err


def test_generate_over_rest_says_progress_needs_grpc_or_uses_its_port(
    fakes: FakeServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "a.png")
    base = [*_args(fakes, "http"), "generate", "a city", "-o", out, "--steps", "2"]
    assert main([*base, "--progress", "always"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "progress needs gRPC" in err and "--grpc-port" in err
    grpc_port = str(fakes.port("grpc"))
    assert main([*base, "--progress", "always", "--grpc-port", grpc_port]) == 0
    assert _progress_steps(capsys.readouterr().err) == ["step 1/2", "step 2/2"]


def test_progress_is_shown_on_a_terminal_by_default(fakes: FakeServers, tmp_path: Path) -> None:
    """The real command, its stderr a pseudo-terminal: no flag needed."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "FLUXSERVE_PROGRESS"}
    command = [sys.executable, "-m", "flux_client", *_args(fakes, "grpc")]
    command += ["generate", "a city", "-o", str(tmp_path / "a.png"), "--steps", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=terminal, env=env) as process:
        os.close(terminal)
        out, _ = process.communicate(timeout=60)
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while chunk := os.read(controller, 4096):
                seen += chunk
    os.close(controller)
    assert process.returncode == 0, seen
    assert _progress_steps(seen.decode()) == ["step 1/2", "step 2/2"]
    assert b"a.png" in out

"""``python -m flux_client`` against the fake servers (in-process, real sockets)."""

from __future__ import annotations

import json
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

"""``--compile-cache``: entries keyed by what the compiled code depends on, saved and
loaded through torch's own cache-artefact API; a missing entry says which part of the
key changed, a damaged one is never handed to torch, and an unwritable volume only costs
the compile. (A compile and a restart from the cache, end to end: ``make bench``.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.compiler._cache import CacheArtifactManager

from flux_server.execution.compile_cache import ARTIFACTS, META, CompileCache, key_parts
from flux_server.execution.speedups import SpeedOptions
from flux_server.settings import SettingsError, load_settings

OPTIONS = SpeedOptions(compile="regional", warmup_sizes=((1024, 1024),), warmup_batch_sizes=(1, 2))


@pytest.fixture(autouse=True)
def _inductor_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The cache points inductor at its entry through the environment: restored after."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "default-inductor"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "default-triton"))


def _pipe(width: int = 64) -> Any:
    config = {"num_layers": 19, "num_single_layers": 38, "inner_dim": width}
    return SimpleNamespace(transformer=SimpleNamespace(config=config, dtype=torch.bfloat16))


def _parts(**changes: str) -> dict[str, str]:
    return key_parts(_pipe(), OPTIONS, "cpu") | changes


def _real_artefacts() -> bytes:
    """A blob torch itself serialised (an AOTAutograd artefact recorded by torch's own
    manager, as a compile records its graphs), without a minute of compiling."""
    CacheArtifactManager._ensure_cache_artifacts_registered()
    CacheArtifactManager.clear()
    CacheArtifactManager.record_artifact("aot_autograd", "azzcompilecachetest0000", b"graph")
    saved = torch.compiler.save_cache_artifacts()
    assert saved is not None
    return saved[0]


def test_the_key_is_what_the_compiled_code_depends_on() -> None:
    parts = _parts()
    assert parts["torch"] == torch.__version__ and parts["gpu"] == "cpu"
    assert parts["shapes"] == "1024x1024" and parts["batch_sizes"] == "1,2"
    assert parts["dtype"] == "bfloat16" and parts["compile"] == "regional/inductor"
    other_shapes = SpeedOptions(compile="regional", warmup_sizes=((768, 1344),))
    entries = {
        CompileCache(Path("/c"), parts).entry,
        CompileCache(Path("/c"), key_parts(_pipe(), other_shapes, "cpu")).entry,
        CompileCache(Path("/c"), key_parts(_pipe(width=32), OPTIONS, "cpu")).entry,
        CompileCache(Path("/c"), _parts(torch="2.0.0")).entry,
    }
    assert len(entries) == 4


def test_saved_artefacts_load_at_the_next_start(tmp_path: Path) -> None:
    blob = _real_artefacts()
    first = CompileCache(tmp_path, _parts())
    assert first.load() == "missing"
    assert first.save() is True
    meta = json.loads((first.entry / META).read_text())
    assert meta["parts"] == _parts() and meta["bytes"] == len(blob)
    assert (first.entry / ARTIFACTS).read_bytes() == blob

    second = CompileCache(tmp_path, _parts())
    assert second.load() == "loaded"
    assert second.save() is False  # loaded whole: nothing new to write
    # Inductor (and Triton) build into the entry: C++ and Triton kernels survive too.
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(second.entry / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(second.entry / "inductor" / "triton")
    # The artefacts were written where inductor looks: the entry, not the old default.
    written = [p for p in (second.entry / "inductor").rglob("*") if p.is_file()]
    assert any("azzcompilecachetest0000" in str(p) for p in written), written


def test_a_missing_entry_says_which_part_of_the_key_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _real_artefacts()
    CompileCache(tmp_path, _parts(torch="2.0.0", shapes="512x512")).save()
    caplog.set_level(logging.INFO, "flux_server.execution.compile_cache")
    assert CompileCache(tmp_path, _parts()).load() == "missing"
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"torch 2.0.0 -> {torch.__version__}" in line and "shapes 512x512 -> 1024x1024" in line
    assert line.endswith("; compiling")


@pytest.mark.parametrize("damage", ["blob", "meta", "key", "garbage"])
def test_a_damaged_entry_recompiles_and_says_why_once(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _real_artefacts()
    cache = CompileCache(tmp_path, _parts())
    cache.save()
    meta_path, blob_path = cache.entry / META, cache.entry / ARTIFACTS
    handed: list[bytes] = []
    real_load = torch.compiler.load_cache_artifacts
    monkeypatch.setattr(
        torch.compiler, "load_cache_artifacts", lambda b: handed.append(b) or real_load(b)
    )
    if damage == "blob":  # a truncated copy
        blob_path.write_bytes(blob_path.read_bytes()[:-10])
    elif damage == "meta":
        meta_path.write_text("{not json")
    elif damage == "key":  # an entry written under another key in this one's place
        meta = json.loads(meta_path.read_text())
        meta["parts"]["torch"] = "2.0.0"
        meta_path.write_text(json.dumps(meta))
    else:  # bytes torch cannot read, recorded with their own sha256
        import hashlib

        blob_path.write_bytes(b"not torch's format")
        meta = json.loads(meta_path.read_text())
        meta["sha256"] = hashlib.sha256(b"not torch's format").hexdigest()
        meta_path.write_text(json.dumps(meta))
    caplog.set_level(logging.INFO, "flux_server.execution.compile_cache")
    again = CompileCache(tmp_path, _parts())
    assert again.load() == "corrupt"
    ours = [r for r in caplog.records if r.name == "flux_server.execution.compile_cache"]
    assert len(ours) == 1 and ours[0].levelno == logging.WARNING
    assert "compiling" in ours[0].getMessage()
    # Only bytes matching their recorded sha256 ever reach torch.
    assert handed == ([b"not torch's format"] if damage == "garbage" else [])
    _real_artefacts()
    assert again.save() is True  # the next start finds a good entry
    assert CompileCache(tmp_path, _parts()).load() == "loaded"


def test_an_unwritable_volume_costs_only_the_compile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    cache = CompileCache(tmp_path, _parts())
    cache.entry.write_text("a file where the entry's directory should be")
    caplog.set_level(logging.INFO, "flux_server.execution.compile_cache")
    assert cache.load() == "missing"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "default-inductor")
    _real_artefacts()
    assert cache.save() is False
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "not writable" in messages and "not written" in messages


def test_the_flag_takes_a_directory() -> None:
    assert load_settings(["--model", "m", "--compile-cache", "/cache"], {}).compile_cache == (
        "/cache"
    )
    env = {"FLUXSERVE_COMPILE_CACHE": "/vol/compile"}
    assert load_settings(["--model", "m"], env).compile_cache == "/vol/compile"
    with pytest.raises(SettingsError, match="--compile-cache / FLUXSERVE_COMPILE_CACHE"):
        load_settings(["--model", "m", "--compile-cache", __file__], {})

"""Compiled kernels kept across restarts (``--compile-cache DIR`` with ``--compile``).

One entry per key, ``DIR/<digest>/``: ``artifacts.bin`` (``torch.compiler.
save_cache_artifacts()``: inductor's FX graphs, AOTAutograd's, autotuning results, and the
Triton kernels bundled with them on a GPU), ``meta.json`` (the key's parts, the blob's
sha256) and ``inductor/`` (inductor's own cache directory, ``TORCHINDUCTOR_CACHE_DIR``).

Why both: on a CPU the artefacts alone save little, because inductor still compiles
every C++ kernel of a cached graph again (a second start measured 141 s with them against
27 s with the directory kept, on the bench model); the directory holds those built
kernels. On a GPU the artefacts carry the Triton kernels and are what a fresh pod can use.

The key is made of what changes the compiled code: torch, diffusers and the GPU (name,
compute capability, CUDA) or ``cpu``, the warm-up shapes and batch sizes, the compile
mode and backend, the dtype and the transformer's configuration, and the options that
change its graph. An entry of another key is never read. Inductor checks every graph it
takes from a cache against its own key (graph, inputs, config, versions), so a stale
entry can cost a compile but never serve another graph's code; a blob that does not match
its recorded sha256 is never handed to torch at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flux_server.execution.speedups import SpeedOptions

if TYPE_CHECKING:
    from flux_server.execution.engine import Engine

log = logging.getLogger(__name__)

FORMAT = "1"
ARTIFACTS = "artifacts.bin"
META = "meta.json"

Outcome = Literal["loaded", "missing", "corrupt"]


def open_and_load(root: str | None, engine: Engine) -> CompileCache | None:
    """``--compile-cache``: the engine's entry, loaded (call it before the first compiled
    call); None without the flag or without compiling."""
    if root is None:
        return None
    if engine.speed.compile == "off":
        log.info("compile cache unused: nothing is compiled (--compile off)")
        return None
    cache = CompileCache(Path(root), key_parts(engine.pipe, engine.speed, engine.info.device))
    cache.load()
    return cache


def key_parts(pipe: Any, options: SpeedOptions, device: str) -> dict[str, str]:
    """What the compiled code depends on, as strings (``meta.json`` shows them)."""
    import diffusers
    import torch

    gpu = "cpu"
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        gpu = f"{torch.cuda.get_device_name()} sm_{major}{minor} cuda {torch.version.cuda}"
    config = json.dumps(dict(pipe.transformer.config), sort_keys=True, default=str)
    return {
        "format": FORMAT,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "gpu": gpu,
        "shapes": ",".join(f"{w}x{h}" for w, h in options.warmup_sizes),
        "batch_sizes": ",".join(str(b) for b in options.warmup_batch_sizes),
        "compile": f"{options.compile}/{options.compile_backend}",
        "dtype": str(pipe.transformer.dtype).removeprefix("torch."),
        "transformer": hashlib.sha256(config.encode()).hexdigest()[:16],
        "graph_options": (
            f"quantize={options.quantize} step_cache={options.step_cache.kind}:"
            f"{options.step_cache.value:g} attention={options.attention_backend} "
            f"lora_max_rank={options.lora_max_rank} offload={options.offload}"
        ),
    }


def digest(parts: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:24]


class CompileCache:
    """One key's entry under ``root``. ``load()`` before the first compiled call,
    ``save()`` after the warm-up; each says what it did in one log line."""

    def __init__(self, root: Path, parts: Mapping[str, str]) -> None:
        self.root = root
        self.parts = dict(parts)
        self.entry = root / digest(parts)
        self.outcome: Outcome | None = None

    def load(self) -> Outcome:
        """Point inductor's cache directory into the entry (when it is writable), then
        hand this key's artefacts to torch. Never raises: anything wrong → compile."""
        blob, self.outcome, why = self._verify()
        if self.outcome == "corrupt":
            self._discard()
        # Before the artefacts load: torch writes them into the cache directory it
        # sees now, and looks them up there when it compiles.
        inductor = self._inductor_dir()
        if blob is not None:
            self.outcome, why = _hand_to_torch(blob)
        detail = {"compile_cache": str(self.entry), "cache": self.outcome}
        if inductor is not None:
            detail["inductor_cache_dir"] = inductor
        if self.outcome == "loaded":
            log.info("compile cache loaded", extra=detail)
        elif self.outcome == "missing":
            log.info(f"compile cache: {why}; compiling", extra=detail)
        else:
            log.warning(f"compile cache entry not used: {why}; compiling", extra=detail)
        return self.outcome

    def save(self) -> bool:
        """Write what this process compiled, unless the entry was loaded whole."""
        if self.outcome == "loaded":
            return False
        import torch

        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            log.info("compile cache: nothing compiled to save", extra={"entry": str(self.entry)})
            return False
        blob = saved[0]
        meta = {"parts": self.parts, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        try:
            self.entry.mkdir(parents=True, exist_ok=True)
            # Blob first, then its meta, each renamed into place: a reader sees a whole
            # pair or a meta whose sha256 the blob does not match (never trusted).
            _write_atomic(self.entry / ARTIFACTS, blob)
            _write_atomic(self.entry / META, json.dumps(meta, indent=1).encode())
        except OSError as exc:
            log.warning(
                "compile cache not written",
                extra={"compile_cache": str(self.entry), "error": repr(exc)},
            )
            return False
        log.info(
            "compile cache saved",
            extra={"compile_cache": str(self.entry), "bytes": len(blob)},
        )
        return True

    def _verify(self) -> tuple[bytes | None, Outcome, str]:
        """(the blob when it may be handed to torch, outcome, why)."""
        meta_path, blob_path = self.entry / META, self.entry / ARTIFACTS
        if not meta_path.exists():
            return None, "missing", self._why_missing()
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
            blob = blob_path.read_bytes()
        except (OSError, ValueError) as exc:
            return None, "corrupt", f"unreadable ({type(exc).__name__}: {exc})"
        if not isinstance(meta, dict) or meta.get("parts") != self.parts:
            return None, "corrupt", "its recorded key differs from this one"
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            return None, "corrupt", f"{ARTIFACTS} does not match its recorded sha256"
        return blob, "loaded", "verified"

    def _why_missing(self) -> str:
        """Why there is no entry: the nearest other key's differences, if any."""
        nearest: dict[str, tuple[str, str]] | None = None
        for meta_path in sorted(self.root.glob(f"*/{META}")):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                theirs = json.loads(meta_path.read_text("utf-8"))["parts"]
                differs = {
                    k: (str(theirs.get(k)), v) for k, v in self.parts.items() if theirs.get(k) != v
                }
                if nearest is None or len(differs) < len(nearest):
                    nearest = differs
        if not nearest:
            return "no entry for this key yet"
        changes = "; ".join(f"{k} {old} -> {new}" for k, (old, new) in sorted(nearest.items()))
        return f"no entry for this key (the nearest one differs in: {changes})"

    def _discard(self) -> None:
        """Move a bad entry aside, then delete it: a pod reading it meanwhile keeps its
        files, and the next save starts clean."""
        aside = self.entry.with_name(f"{self.entry.name}.bad-{os.getpid()}")
        with contextlib.suppress(OSError):
            self.entry.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)

    def _inductor_dir(self) -> str | None:
        """Point inductor (and Triton) at the entry's directory, if it can be written
        (a read-only volume: the artefacts still load, the kernels build locally)."""
        directory = self.entry / "inductor"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            log.warning(
                "compile cache directory is not writable; inductor builds in its default directory",
                extra={"compile_cache": str(self.entry), "error": repr(exc)},
            )
            return None
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
        os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")
        return str(directory)


def _hand_to_torch(blob: bytes) -> tuple[Outcome, str]:
    import torch

    try:
        info = torch.compiler.load_cache_artifacts(blob)
    except Exception as exc:  # torch's deserialisers raise many kinds
        return "corrupt", f"torch could not load it ({type(exc).__name__}: {exc})"
    if info is None:  # torch logs the reason and loads nothing
        return "corrupt", "torch could not read it"
    return "loaded", "loaded"


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)

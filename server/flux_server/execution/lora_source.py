"""Where an adapter's weights come from, made into a local path the pipeline loads, and
checked against the sha256 its deployment pins.

A ``--lora`` path is a local file or directory (an image's, a ConfigMap's or a PVC's), or
an fsspec URL such as ``s3://bucket/adapters/brand-v3/pytorch_lora_weights.safetensors``
(s3fs for S3; credentials and endpoint from the usual AWS environment:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``). A URL naming a
folder means that folder's ``pytorch_lora_weights.safetensors``. Downloads go to a
private temporary folder that lives as long as the process (the pod's ``/tmp``).

``--lora-sha256 NAME=HEX`` pins the adapter file's digest, as a FluxLoRATraining reported
it. An adapter whose bytes differ is refused and start-up fails: a pod that served a
different adapter under the promoted name would pass a canary it should not, and a pod
that never becomes ready is what the canary strategy rolls back.

Torch-free: it runs before the model loads, so a wrong adapter fails in seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flux_server.execution.lora import (
    DEFAULT_WEIGHT_NAME,
    WEIGHT_SUFFIXES,
    LoraFlagError,
    LoraLoadError,
    LoraSpec,
)

log = logging.getLogger(__name__)

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_BLOCK = 1 << 20


class LoraDigestError(LoraLoadError):
    """An adapter whose file is not the one its deployment pins."""

    def __init__(self, name: str, where: str, expected: str, actual: str) -> None:
        super().__init__(
            f"adapter {name!r} from {where}: sha256 {actual} differs from the expected "
            f"{expected} (--lora-sha256); refusing to serve it"
        )
        self.name, self.expected, self.actual = name, expected, actual


def is_url(path: str) -> bool:
    """A path with a scheme (``s3://``...), fetched rather than read in place."""
    return "://" in path and not path.startswith("file://")


def parse_sha256_flags(values: Iterable[str], specs: Sequence[LoraSpec]) -> dict[str, str]:
    """``NAME=HEX`` (repeatable) → {name: hex}; each name must be an adapter of
    ``--lora``, given once, with 64 lowercase hex digits."""
    names = {spec.name for spec in specs}
    pinned: dict[str, str] = {}
    for value in values:
        where = f"--lora-sha256 {value!r}"
        name, sep, digest = (part.strip() for part in value.partition("="))
        if not sep:
            raise LoraFlagError(f"{where}: expected NAME=SHA256")
        if name not in names:
            raise LoraFlagError(f"{where}: no --lora adapter is named {name!r}")
        if name in pinned:
            raise LoraFlagError(f"{where}: adapter {name!r} is pinned twice")
        if not SHA256_PATTERN.match(digest):
            raise LoraFlagError(f"{where}: the sha256 must be 64 lowercase hex digits")
        pinned[name] = digest
    return pinned


def check_local(specs: Sequence[LoraSpec]) -> None:
    """The cheap check before anything loads: local adapters exist (URLs are fetched
    later, with the weights)."""
    for spec in specs:
        if not is_url(spec.path) and not Path(spec.path).exists():
            raise LoraFlagError(f"--lora {spec.name}: {spec.path} does not exist")


def resolve(
    specs: Sequence[LoraSpec], pinned: Mapping[str, str], download_dir: Path | None = None
) -> list[LoraSpec]:
    """The specs with every URL downloaded and every pinned digest checked; raises
    ``LoraLoadError`` (``LoraDigestError`` for a wrong digest) naming the adapter."""
    resolved: list[LoraSpec] = []
    for spec in specs:
        expected, source = pinned.get(spec.name), spec.path
        if is_url(source):
            download_dir = download_dir or Path(tempfile.mkdtemp(prefix="fluxserve-loras-"))
            local, actual = _download(spec, download_dir)
            spec = spec.model_copy(update={"path": str(local)})
        elif expected is not None:
            local = _adapter_file(spec)
            actual = file_sha256(local)
        if expected is not None:
            if actual != expected:
                if is_url(source):
                    local.unlink(missing_ok=True)  # never left where a later load finds it
                raise LoraDigestError(spec.name, source, expected, actual)
            log.info("lora adapter verified", extra={"adapter": spec.name, "sha256": actual})
        resolved.append(spec)
    return resolved


def _adapter_file(spec: LoraSpec) -> Path:
    """The one file a digest covers: the file itself, or a folder's adapter file."""
    path = Path(spec.path)
    if not path.exists():
        raise LoraLoadError(f"adapter {spec.name!r}: {spec.path} does not exist")
    if path.is_file():
        return path
    file = path / DEFAULT_WEIGHT_NAME
    if not file.is_file():
        raise LoraLoadError(f"adapter {spec.name!r}: {spec.path} holds no {DEFAULT_WEIGHT_NAME}")
    return file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _remote_file(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(WEIGHT_SUFFIXES) else f"{url}/{DEFAULT_WEIGHT_NAME}"


def _download(spec: LoraSpec, folder: Path) -> tuple[Path, str]:
    """Copy the adapter file under ``folder/<name>/``, hashing as it streams; returns the
    local file and its sha256. The file appears under its final name only when whole."""
    url = _remote_file(spec.path)
    fs, remote = _filesystem(spec.name, url)
    target = folder / spec.name / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with fs.open(remote, "rb") as source, partial.open("wb") as sink:
            for block in iter(lambda: source.read(_BLOCK), b""):
                digest.update(block)
                sink.write(block)
    except FileNotFoundError:
        partial.unlink(missing_ok=True)
        raise LoraLoadError(f"adapter {spec.name!r}: {url} does not exist") from None
    except Exception as exc:  # each filesystem raises its own errors: all mean "unreadable"
        partial.unlink(missing_ok=True)
        raise LoraLoadError(
            f"adapter {spec.name!r}: cannot read {url}: {type(exc).__name__}: {exc}"
        ) from exc
    os.replace(partial, target)
    log.info("lora adapter downloaded", extra={"adapter": spec.name, "uri": url})
    return target, digest.hexdigest()


def _filesystem(name: str, url: str) -> tuple[Any, str]:
    """fsspec's filesystem for ``url``; a missing implementation package is named."""
    try:
        import fsspec
    except ImportError:
        raise LoraLoadError(
            f"adapter {name!r}: {url} needs the fsspec package (pip install 'fluxserve[s3]')"
        ) from None
    from fsspec.registry import known_implementations

    protocol = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        implementation = known_implementations.get(protocol, {}).get("class", "")
        package = implementation.split(".", 1)[0] or protocol
        raise LoraLoadError(
            f"adapter {name!r}: {protocol}:// needs the {package} package "
            "(pip install 'fluxserve[s3]')"
        ) from None
    except ValueError as exc:
        raise LoraLoadError(f"adapter {name!r}: {url}: {exc}") from exc

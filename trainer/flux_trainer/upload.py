"""Copy a finished run's adapter, metrics.json and contact sheets under an fsspec URI
prefix (``--upload s3://bucket/adapters/brand-v3``), the adapter last: once it is
there, everything it refers to is."""

from __future__ import annotations

import logging
from pathlib import Path

from flux_trainer.config import TrainConfig
from flux_trainer.errors import TrainerError
from flux_trainer.samples import FOLDER as SAMPLES
from flux_trainer.sources import filesystem

log = logging.getLogger("flux_trainer")


def upload(config: TrainConfig, adapter_file: Path) -> str:
    """Returns the URI of the uploaded adapter."""
    assert config.upload is not None
    prefix = config.upload.rstrip("/")
    fs, root = filesystem(prefix, "--upload")
    output = Path(config.output)
    files = [*sorted((output / SAMPLES).glob("*.png")), output / "metrics.json", adapter_file]
    try:
        for path in files:
            relative = path.relative_to(output).as_posix()
            fs.makedirs(f"{root}/{Path(relative).parent.as_posix()}".rstrip("/."), exist_ok=True)
            fs.put_file(str(path), f"{root}/{relative}")
    except Exception as exc:  # every filesystem has its own errors
        raise TrainerError(f"--upload {config.upload!r}: {type(exc).__name__}: {exc}") from exc
    uri = f"{prefix}/{adapter_file.relative_to(output).as_posix()}"
    log.info("uploaded", extra={"event": "uploaded", "adapter_uri": uri, "files": len(files)})
    return uri

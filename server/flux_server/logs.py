"""Structured logging: one JSON object per line, with whatever ``extra`` a call passes
(request ids, model names, sizes)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "info", release: str | None = None, hub_libraries: bool = True) -> None:
    """Send every logger's records to stderr as JSON (called once, from main).
    ``hub_libraries`` False: leave diffusers and transformers unimported (a queue front
    runs no model, and importing them imports torch)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter({"release": release} if release else None))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn and grpc bring their own handlers; route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if hub_libraries:
        _quiet_hub_libraries()


def _quiet_hub_libraries() -> None:
    """diffusers and transformers print with their own handlers and draw progress bars
    while loading; send their records through ours and drop the bars (not JSON)."""
    for name in ("diffusers", "transformers"):
        try:
            module = __import__(f"{name}.utils.logging", fromlist=["logging"])
        except ImportError:  # the SDK-only install has neither
            continue
        module.disable_default_handler()
        module.enable_propagation()
        module.disable_progress_bar()


def route_torch_logs() -> None:
    """torch puts its own stderr handlers (glog-style text, not JSON) on its loggers when
    it is imported, and libraries that register types with it at import (torchao through
    diffusers) log through them. Import it here and send those records through ours."""
    import torch  # noqa: F401  (its import installs the handlers this removes)

    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "torch" and isinstance(logger, logging.Logger):
            logger.handlers[:] = []
            logger.propagate = True

"""``python -m flux_server``: serve a FLUX pipeline over REST and gRPC.

``python -m flux_server keys ...`` manages the API keys file instead.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flux_server.listeners import Listeners
    from flux_server.settings import ServerSettings

#: What serving needs beyond the base install: the ``server`` extra's import names.
SERVER_EXTRA = (
    "torch",
    "diffusers",
    "transformers",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "ecs_logging",
)
INSTALL_HINT = "pip install 'fluxserve[server]'"


def missing_server_extra() -> str | None:
    """The first module of the ``server`` extra that cannot be imported, or None."""
    for name in SERVER_EXTRA:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return name
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keys"]:
        from flux_server.admission import keys

        return keys.main(args[1:])

    from flux_server.settings import SettingsError, load_settings

    try:
        settings = load_settings(args, os.environ)
    except SettingsError as exc:
        return _refuse(exc, 2)
    missing = missing_server_extra()
    if missing is not None:
        return _refuse(
            f"serving needs the 'server' extra ({missing} is not installed): {INSTALL_HINT}", 1
        )
    return _serve(settings)


def _refuse(reason: object, code: int) -> int:
    """Why the process cannot serve, in one line on stderr; ``code`` its exit status."""
    print(f"flux_server: {reason}", file=sys.stderr)
    return code


def _serve(settings: ServerSettings) -> int:
    """Logs, then the ports, then (in that order: a busy port fails in a second, before
    the heavy imports and the model) the server, until it stops."""
    from flux_server import logs

    front = bool(settings.queue) and settings.role == "front"
    logs.configure(
        settings.log_level, settings.release, settings.log_format, hub_libraries=not front
    )

    from flux_server.listeners import Listeners, PortUnavailable

    try:
        listeners = Listeners.bind(settings)
    except PortUnavailable as exc:
        return _refuse(exc, 1)
    if not front:
        # A front loads no model: it never imports torch (a CPU pod, cheap to scale).
        logs.route_torch_logs()
    code, abandoned = asyncio.run(_run(settings, listeners))
    if abandoned:
        # The drain timed out (or the load was cut short): the engine thread is still
        # inside a call whose caller has been answered. Python would wait for it before
        # exiting, past --drain-timeout; leave now instead.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


async def _run(settings: ServerSettings, listeners: Listeners) -> tuple[int, bool]:
    """The server's exit status, and whether it left work running (see ``_serve``)."""
    from flux_server.listeners import PortUnavailable
    from flux_server.server import FluxServer

    try:
        server = FluxServer(settings, listeners)
    except (OSError, ValueError) as exc:
        # A missing keys file, a malformed blocklist or presets directory.
        listeners.close()
        return _refuse(exc, 2), False
    try:
        return await server.run(), server.abandoned_work
    except PortUnavailable as exc:
        code = _refuse(exc, 1)
        await server.service.close()
        return code, server.abandoned_work


if __name__ == "__main__":
    sys.exit(main())

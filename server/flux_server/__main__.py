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
        print(f"flux_server: {exc}", file=sys.stderr)
        return 2
    missing = missing_server_extra()
    if missing is not None:
        print(
            f"flux_server: serving needs the 'server' extra ({missing} is not installed): "
            f"{INSTALL_HINT}",
            file=sys.stderr,
        )
        return 1
    from flux_server import logs

    front = bool(settings.queue) and settings.role == "front"
    logs.configure(
        settings.log_level, settings.release, settings.log_format, hub_libraries=not front
    )

    from flux_server.listeners import Listeners, PortUnavailable

    try:
        # Before the heavy imports and the model: a busy port fails in a second.
        listeners = Listeners.bind(settings)
    except PortUnavailable as exc:
        print(f"flux_server: {exc}", file=sys.stderr)
        return 1

    if not front:
        # A front loads no model: it never imports torch (a CPU pod, cheap to scale).
        logs.route_torch_logs()
    from flux_server.server import FluxServer

    servers: list[FluxServer] = []

    async def serve() -> int:
        try:
            server = FluxServer(settings, listeners)
        except (OSError, ValueError) as exc:
            # A missing keys file, a malformed blocklist or presets directory.
            listeners.close()
            print(f"flux_server: {exc}", file=sys.stderr)
            return 2
        servers.append(server)
        try:
            return await server.run()
        except PortUnavailable as exc:
            print(f"flux_server: {exc}", file=sys.stderr)
            await server.service.close()
            return 1

    code = asyncio.run(serve())
    if servers and servers[0].abandoned_work:
        # The drain timed out (or the load was cut short): the engine thread is still
        # inside a call whose caller has been answered. Python would wait for it before
        # exiting, past --drain-timeout; leave now instead.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

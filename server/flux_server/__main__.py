"""``python -m flux_server``: serve a FLUX pipeline over REST and gRPC.

``python -m flux_server keys ...`` manages the API keys file instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keys"]:
        from flux_server import keys

        return keys.main(args[1:])

    from flux_server import logs
    from flux_server.settings import SettingsError, load_settings

    try:
        settings = load_settings(args, os.environ)
    except SettingsError as exc:
        print(f"flux_server: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.release)

    from flux_server.server import FluxServer

    servers: list[FluxServer] = []

    async def serve() -> int:
        try:
            server = FluxServer(settings)
        except (OSError, ValueError) as exc:
            # A missing keys file, a malformed blocklist or presets directory.
            print(f"flux_server: {exc}", file=sys.stderr)
            return 2
        servers.append(server)
        return await server.run()

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

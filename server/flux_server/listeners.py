"""The listening ports, bound before anything slow: a port that cannot be had is one
line naming its flag (``--http-port 8080 is in use``), not a traceback minutes into
start-up after the model has loaded."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from flux_server.settings import ServerSettings


class PortUnavailable(Exception):
    """A listener's port cannot be bound; the message names the flag and the port."""

    def __init__(self, flag: str, port: int, error: OSError | None = None) -> None:
        if error is None or error.errno == errno.EADDRINUSE:
            message = f"{flag} {port} is in use"
        else:
            message = f"{flag} {port} cannot be bound: {error.strerror or error}"
        super().__init__(message)
        self.flag = flag
        self.port = port


def bind(host: str, port: int, flag: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), not yet listening:
    the HTTP server listens on it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(flag, port, OSError(exc.errno, f"unknown host {host!r}")) from None
    sock = socket.socket(family, kind, proto)
    try:
        # As every server: a restart may bind while old connections sit in TIME_WAIT.
        # (Not SO_REUSEPORT: a second server on the same port must fail, not share it.)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(flag, port, exc) from None
    return sock


def check_free(host: str, port: int, flag: str) -> None:
    """Raise :class:`PortUnavailable` unless ``host:port`` can be bound now, for a
    listener that binds by itself (gRPC), whose own failure is a C-level log line."""
    if port != 0:
        bind(host, port, flag).close()


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@dataclass
class Listeners:
    """The bound HTTP socket and, with ``--metrics-port``, the metrics socket; the gRPC
    port has been checked free (gRPC binds it itself)."""

    http: socket.socket
    metrics: socket.socket | None = None

    @classmethod
    def bind(cls, settings: ServerSettings) -> Listeners:
        """Bind what the settings ask for, or raise :class:`PortUnavailable` holding
        nothing. Cheap: ``main()`` calls it before importing torch and the frameworks."""
        s = settings
        http = bind(s.host, s.http_port, "--http-port")
        metrics: socket.socket | None = None
        try:
            if s.metrics_port:
                metrics = bind(s.host, s.metrics_port, "--metrics-port")
            check_free(s.host, s.grpc_port, "--grpc-port")
        except PortUnavailable:
            http.close()
            if metrics is not None:
                metrics.close()
            raise
        return cls(http, metrics)

    def close(self) -> None:
        self.http.close()
        if self.metrics is not None:
            self.metrics.close()

"""The gRPC sweeper's pass on real loopback sockets of this process: connections that
sent no HTTP/2 preface are shut down once the port is full, the others are left alone."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from flux_server.api.grpc import idle

pytestmark = pytest.mark.skipif(not idle.supported(), reason="reads TCP_INFO (Linux)")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Clients = tuple[int, list[socket.socket], list[socket.socket]]


@pytest.fixture
def port_with_clients() -> Iterator[Clients]:
    """A listening port, 5 silent clients and 1 that sent the preface, all accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    accepted = [listener.accept()[0] for _ in clients]
    clients[-1].sendall(PREFACE)
    accepted[-1].recv(len(PREFACE), socket.MSG_WAITALL)
    try:
        yield port, clients, accepted
    finally:
        for sock in clients + accepted + [listener]:
            sock.close()


def _closed(client: socket.socket) -> bool:
    client.settimeout(2)
    return client.recv(1) == b""


def test_the_port_s_connections_are_seen(port_with_clients: Clients) -> None:
    port, _, accepted = port_with_clients
    peers = {p.fd: p for p in idle.connections(port)}
    assert set(peers) == {sock.fileno() for sock in accepted}  # not the listener
    assert peers[accepted[-1].fileno()].bytes_received == len(PREFACE)
    assert all(peers[sock.fileno()].bytes_received == 0 for sock in accepted[:-1])


def test_below_the_mark_nothing_is_closed(port_with_clients: Clients) -> None:
    port, _, _ = port_with_clients
    assert idle.sweep(port, high=7, quiet=0) == 0


def test_at_the_mark_the_silent_ones_are_shut_down(port_with_clients: Clients) -> None:
    port, clients, accepted = port_with_clients
    assert idle.sweep(port, high=6, quiet=0) == 5
    assert all(_closed(client) for client in clients[:-1])
    # The talking client's connection is untouched, and the descriptors stay the owner's.
    clients[-1].sendall(b"more")
    assert accepted[-1].recv(4) == b"more"
    assert all(sock.fileno() >= 0 for sock in accepted)


def test_a_connection_quiet_for_less_than_the_limit_is_kept(port_with_clients: Clients) -> None:
    port, _, _ = port_with_clients
    assert idle.sweep(port, high=1, quiet=3600) == 0

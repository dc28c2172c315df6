"""``--webhook-allow-hosts``: the host names, addresses and networks a webhook may reach
although they are not public (:class:`AllowList`), parsed when the settings are read so
a bad entry stops the server at start. The check of a webhook's address itself is
:mod:`flux_server.jobs.webhook_url`."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_FLAG = "--webhook-allow-hosts"
_NUMERIC_V4 = frozenset("0123456789abcdefx.")


@dataclass(frozen=True)
class AllowList:
    """``--webhook-allow-hosts``: host names (exact, case-insensitive) and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Raises ``ValueError`` naming the flag and the entry that is neither a host
        name nor an address or CIDR."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            if "/" in entry or ip_literal(entry) is not None:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError as exc:
                    raise ValueError(f"{ALLOW_FLAG}: {raw!r} is not a CIDR ({exc})") from None
            elif _is_host_name(entry):
                hosts.add(entry.rstrip("."))
            else:
                raise ValueError(f"{ALLOW_FLAG}: {raw!r} is neither a host name nor a CIDR")
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


def _is_host_name(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )


def ip_literal(host: str) -> IPAddress | None:
    """The address a host that is an IP literal names, in any spelling the resolver
    accepts; None for a host name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and set(host.lower()) <= _NUMERIC_V4 and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None

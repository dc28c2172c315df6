"""Where a webhook may be sent: the server-side request forgery (SSRF) check.

A webhook URL comes from a caller and the server POSTs to it, so without a check any
caller could make the server reach its own loopback, the pod network or the cloud's
metadata service. Only ``http(s)`` URLs whose host resolves exclusively to globally
routable unicast addresses are accepted; ``--webhook-allow-hosts`` lists the
exceptions (host names, addresses or CIDRs), e.g. a receiver inside the cluster.

Every address a name resolves to is checked, and the name is resolved twice: at
submission (the caller hears about a bad URL at once, as a 400 naming ``webhook``) and
again at each delivery, where the POST then goes to the address just checked (DNS
rebinding: a name that resolved to a public address at submission may point to
127.0.0.1 by the time the job ends). IPv4 hidden in IPv6 (mapped ``::ffff:a.b.c.d``,
6to4, NAT64, Teredo) is judged by the IPv4 inside, and the legacy numeric spellings
the C resolver accepts (``2130706433``, ``0177.0.0.1``, ``127.1``) are read as it
reads them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from flux_server.errors import RefusedTarget
from flux_server.settings.hosts import ALLOW_FLAG, AllowList, IPAddress, IPNetwork, ip_literal

__all__ = [
    "ALLOW_FLAG",
    "AllowList",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "WebhookTarget",
    "check_webhook_url",
    "embedded_ipv4",
    "refusal",
    "system_resolver",
]

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

FIELD = "webhook"
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.azure.internal"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, Teredo), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why a webhook must not go to this address (a short phrase), or None when it may."""
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = refusal(inner)
        return f"{reason} (IPv4 {inner} inside IPv6)" if reason else None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class WebhookTarget:
    """A checked webhook URL and the addresses its host resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL; ``RefusedTarget`` for anything but a
    well-formed http(s) URL."""
    if not isinstance(url, str) or len(url) > 2048:
        raise RefusedTarget("webhook must be an http(s) URL of at most 2048 characters", FIELD)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise RefusedTarget(f"webhook is not a valid URL: {exc}", FIELD) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RefusedTarget(
            f"webhook must be an http or https URL, not {scheme or 'one without a scheme'}",
            FIELD,
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise RefusedTarget("webhook URL has no host", FIELD)
    return scheme, host, port or (443 if scheme == "https" else 80)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The stdlib resolver (``getaddrinfo``), run off the event loop."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        None, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    )
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _judge(host: str, addresses: Sequence[IPAddress], allow: AllowList) -> None:
    for address in addresses:
        if allow.allows_address(address):
            continue
        reason = refusal(address)
        if reason:
            shown = host if str(address) == host else f"{host} ({address})"
            raise RefusedTarget(
                f"webhook host {shown} is {reason}; list it in {ALLOW_FLAG} to allow it",
                FIELD,
            )


async def check_webhook_url(
    url: str, allow: AllowList, resolve: Resolver = system_resolver
) -> WebhookTarget:
    """Accept a webhook URL or raise ``RefusedTarget`` (400, field ``webhook``) saying
    why. A host listed in ``--webhook-allow-hosts`` is accepted without resolving."""
    scheme, host, port = split_url(url)
    if allow.allows_host(host):
        return WebhookTarget(url, scheme, host, port, ())
    literal = ip_literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        if host.lower() in METADATA_HOSTS or host.lower() == "localhost":
            what = "loopback" if host.lower() == "localhost" else "a cloud metadata address"
            raise RefusedTarget(
                f"webhook host {host} is {what}; list it in {ALLOW_FLAG} to allow it", FIELD
            )
        try:
            addresses = await resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise RefusedTarget(f"webhook host {host} does not resolve: {exc}", FIELD) from None
        if not addresses:
            raise RefusedTarget(f"webhook host {host} does not resolve", FIELD)
    _judge(host, addresses, allow)
    return WebhookTarget(url, scheme, host, port, tuple(dict.fromkeys(addresses)))


async def delivery_address(
    target: WebhookTarget, allow: AllowList, resolve: Resolver = system_resolver
) -> IPAddress | None:
    """Resolve the host again just before a delivery and return the address to connect
    to, or None for a host the allow list names (connect by name). Raises
    ``RefusedTarget`` when the host now resolves to a refused address."""
    if allow.allows_host(target.host):
        return None
    checked = await check_webhook_url(target.url, allow, resolve)
    return checked.addresses[0]

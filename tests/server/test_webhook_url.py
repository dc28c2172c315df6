"""The SSRF check of webhook URLs: schemes, every class of refused address (IPv4 and
IPv6, hidden and oddly spelt), the allow list, and DNS rebinding between submission
and delivery."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from flux_server.errors import RefusedTarget, status_of
from flux_server.jobs.webhook_url import (
    AllowList,
    IPAddress,
    check_webhook_url,
    delivery_address,
    refusal,
    system_resolver,
)

NOBODY = AllowList()


def answers(*addresses: str):  # a resolver whose answers the test chooses
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


async def refused(url: str, allow: AllowList = NOBODY, resolve=None) -> str:
    with pytest.raises(RefusedTarget) as caught:
        if resolve is None:
            await check_webhook_url(url, allow)
        else:
            await check_webhook_url(url, allow, resolve)
    assert caught.value.field == "webhook"
    assert status_of(caught.value).http == 400
    return caught.value.message


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("192.0.2.7", "private"),  # documentation (TEST-NET-1)
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:10.1.2.3", "private (IPv4 10.1.2.3 inside IPv6)"),
        ("2002:7f00:1::1", "loopback (IPv4 127.0.0.1 inside IPv6)"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address (IPv4 169.254.169.254 inside IPv6)"),
    ],
)
def test_refused_address_classes(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # decimal
        "http://0177.0.0.1/hook",  # octal
        "http://0x7f.1/hook",  # hex, short form
        "http://127.1/hook",
        "http://017700000001/hook",
        "http://localhost:9000/hook",
        "http://LOCALHOST./hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1%25eth0]/",
    ],
)
async def test_literal_and_named_internal_hosts_are_refused(url: str) -> None:
    message = await refused(url)
    assert "--webhook-allow-hosts" in message


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "not ftp"),
        ("file:///etc/passwd", "not file"),
        ("gopher://example.com/", "not gopher"),
        ("example.com/hook", "without a scheme"),
        ("http:///nohost", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
async def test_only_http_urls_with_a_host(url: str, words: str) -> None:
    assert words in await refused(url)


async def test_every_resolved_address_is_checked() -> None:
    mixed = answers("93.184.216.34", "10.0.0.5")
    message = await refused("https://hooks.example.com/x", resolve=mixed)
    assert "hooks.example.com (10.0.0.5) is private" in message
    target = await check_webhook_url(
        "https://hooks.example.com/x", NOBODY, answers("93.184.216.34", "93.184.216.34")
    )
    assert (target.host, target.port, target.scheme) == ("hooks.example.com", 443, "https")
    assert target.addresses == (ipaddress.ip_address("93.184.216.34"),)


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def nxdomain(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert "does not resolve" in await refused("http://nowhere.invalid/", resolve=nxdomain)


async def test_the_real_resolver_runs_and_its_loopback_answer_is_refused() -> None:
    assert ipaddress.ip_address("127.0.0.1") in await system_resolver("localhost", 80)
    # A name (not a literal) that the system resolver maps to this machine.
    host = socket.gethostname()
    addresses = await system_resolver(host, 80)
    if all(refusal(a) is None for a in addresses):
        pytest.skip(f"{host} resolves to a public address here")
    await refused(f"http://{host}:8000/hook")


async def test_the_allow_list_admits_hosts_and_networks() -> None:
    allow = AllowList.parse(["receiver.local", "10.0.0.0/8", "::1", " "])
    assert allow.hosts == {"receiver.local"}
    await check_webhook_url("http://receiver.local:9000/h", allow, answers("192.168.0.9"))
    await check_webhook_url("http://10.20.30.40/h", allow)
    await check_webhook_url("http://[::1]:8000/h", allow)
    await check_webhook_url("http://hooks.svc/h", allow, answers("10.1.1.1"))
    assert "is loopback" in await refused("http://127.0.0.1/h", allow)
    assert "is private" in await refused("http://hooks.svc/h", allow, answers("192.168.1.1"))


@pytest.mark.parametrize(
    ("entry", "words"),
    [("10.0.0.0/33", "is not a CIDR"), ("bad host!", "neither a host name nor a CIDR")],
)
def test_a_malformed_allow_entry_names_the_flag(entry: str, words: str) -> None:
    with pytest.raises(ValueError, match="--webhook-allow-hosts") as caught:
        AllowList.parse([entry])
    assert words in str(caught.value)


async def test_dns_rebinding_is_caught_at_delivery() -> None:
    target = await check_webhook_url("http://hooks.example.com/x", NOBODY, answers("8.8.8.8"))
    assert await delivery_address(target, NOBODY, answers("8.8.4.4")) == ipaddress.ip_address(
        "8.8.4.4"
    )
    with pytest.raises(RefusedTarget, match="loopback"):
        await delivery_address(target, NOBODY, answers("127.0.0.1"))
    listed = AllowList.parse(["hooks.example.com"])
    assert await delivery_address(target, listed, answers("127.0.0.1")) is None

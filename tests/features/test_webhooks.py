"""Webhook deliveries to a real receiver on 127.0.0.1: Standard Webhooks signatures
checked with the library's own ``Webhook.verify``, retries after failures, redirects
not followed, the address pinned after re-resolution, a full queue never blocking."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from flux_server.jobs.webhook_url import AllowList, IPAddress, WebhookTarget, check_webhook_url
from flux_server.jobs.webhooks import WebhookSender, pinned_request
from flux_server.metrics import Metrics

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
LOCAL = AllowList.parse(["127.0.0.0/8"])


@dataclass
class Receiver:
    """An HTTP server answering each POST with the next status of ``script`` (then 200)."""

    script: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append((dict(request.headers), await request.read()))
        status = self.script.pop(0) if self.script else 200
        if status == 302:
            raise web.HTTPFound(self.url("/elsewhere"))
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    app = web.Application()
    app.router.add_post("/hook", made.handle)
    app.router.add_route("*", "/elsewhere", made.handle)  # any method a redirect might use
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    made.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield made
    await runner.cleanup()


def count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "fluxserve_webhook_deliveries_total", {"outcome": outcome}
    )
    return value or 0.0


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def sender() -> AsyncIterator[tuple[WebhookSender, Metrics]]:
    metrics = Metrics()
    made = WebhookSender(SECRET, LOCAL, metrics=metrics, backoff_base=0.01, max_attempts=3)
    await made.start()
    yield made, metrics
    await made.close()


async def target(url: str, allow: AllowList = LOCAL, resolve=None) -> WebhookTarget:
    if resolve is None:
        return await check_webhook_url(url, allow)
    return await check_webhook_url(url, allow, resolve)


async def test_a_delivery_is_signed_per_standard_webhooks(
    receiver: Receiver, sender: tuple[WebhookSender, Metrics]
) -> None:
    webhooks, metrics = sender
    payload = {"id": "job_a", "status": "succeeded", "images": [{"seed": 1}]}
    assert webhooks.offer(await target(receiver.url()), "job_a", 7, "succeeded", payload)
    await until(lambda: count(metrics, "delivered") == 1)
    [(headers, body)] = receiver.received
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.succeeded", "data": payload}
    assert headers["webhook-id"] == "msg_job_a_7"
    assert headers["webhook-signature"].startswith("v1,")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + base64.b64encode(bytes(32)).decode()).verify(body, headers)


async def test_a_failing_receiver_is_retried_with_the_same_id(
    receiver: Receiver, sender: tuple[WebhookSender, Metrics]
) -> None:
    webhooks, metrics = sender
    receiver.script = [500, 503]
    webhooks.offer(await target(receiver.url()), "job_a", 3, "running", {"status": "running"})
    await until(lambda: count(metrics, "delivered") == 1)
    assert count(metrics, "retried") == 2
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert len(receiver.received) == 3 and ids == {"msg_job_a_3"}
    for headers, body in receiver.received:
        Webhook(SECRET).verify(body, headers)


async def test_giving_up_after_the_last_attempt_and_on_a_client_error(
    receiver: Receiver, sender: tuple[WebhookSender, Metrics]
) -> None:
    webhooks, metrics = sender
    receiver.script = [500, 500, 500]
    webhooks.offer(await target(receiver.url()), "job_a", 1, "failed", {})
    await until(lambda: count(metrics, "failed") == 1)
    assert len(receiver.received) == 3 and count(metrics, "retried") == 2
    receiver.script = [404]
    webhooks.offer(await target(receiver.url()), "job_b", 1, "failed", {})
    await until(lambda: count(metrics, "failed") == 2)
    assert len(receiver.received) == 4


async def test_redirects_are_not_followed(
    receiver: Receiver, sender: tuple[WebhookSender, Metrics]
) -> None:
    webhooks, metrics = sender
    receiver.script = [302]
    webhooks.offer(await target(receiver.url()), "job_a", 1, "succeeded", {})
    await until(lambda: count(metrics, "failed") == 1)
    assert len(receiver.received) == 1  # /elsewhere was never asked


async def test_the_host_is_resolved_again_and_the_checked_address_is_used(
    receiver: Receiver,
) -> None:
    answers = ["93.184.216.34"]

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(answers[0])]

    metrics = Metrics()
    webhooks = WebhookSender(SECRET, LOCAL, metrics=metrics, resolve=resolve)
    await webhooks.start()
    try:
        # Accepted at submission (public), then the name moves to loopback: refused...
        hook = await target(receiver.url(host="hooks.example"), AllowList(), resolve)
        answers[0] = "127.0.0.1"
        webhooks.allow = AllowList()
        webhooks.offer(hook, "job_a", 1, "succeeded", {})
        await until(lambda: count(metrics, "refused") == 1)
        assert receiver.received == []
        # ...unless loopback is allowed: then it is POSTed to the address just checked,
        # with the name in Host.
        webhooks.allow = LOCAL
        webhooks.offer(hook, "job_a", 2, "succeeded", {})
        await until(lambda: count(metrics, "delivered") == 1)
        [(headers, _)] = receiver.received
        assert headers["Host"] == f"hooks.example:{receiver.port}"
    finally:
        await webhooks.close()


def test_pinned_requests_keep_the_name_for_host_and_tls() -> None:
    hook = WebhookTarget("https://hooks.example/x?y=1", "https", "hooks.example", 443, ())
    url, headers, extensions = pinned_request(hook, ipaddress.ip_address("2001:db8::5"))
    assert url == "https://[2001:db8::5]/x?y=1"
    assert headers == {"host": "hooks.example"} and extensions == {"sni_hostname": "hooks.example"}
    assert pinned_request(hook, None) == ("https://hooks.example/x?y=1", {}, {})


async def test_a_full_queue_drops_and_counts_but_never_waits() -> None:
    metrics = Metrics()
    webhooks = WebhookSender(SECRET, LOCAL, metrics=metrics, max_pending=1)
    hook = await target("http://127.0.0.1:9/hook")
    started = time.monotonic()
    assert webhooks.offer(hook, "job_a", 1, "progress", {})
    assert not webhooks.offer(hook, "job_a", 2, "progress", {})
    assert time.monotonic() - started < 1
    assert count(metrics, "dropped") == 1 and webhooks.pending == 1
    await webhooks.close()

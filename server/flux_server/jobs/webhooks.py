"""Webhook deliveries, signed per the Standard Webhooks spec, off the engine's path.

:meth:`WebhookSender.offer` only puts a delivery on a bounded ``asyncio.Queue`` and
returns at once; a few worker tasks POST them with ``httpx`` (redirects never
followed: a 3xx is a failure, so a receiver cannot bounce the server to an internal
address). Before each attempt the host is resolved and checked again and the request
goes to the address just checked (``flux_server.jobs.webhook_url``), with the original
``Host`` and TLS server name.

Every attempt carries ``webhook-id`` (the same for all attempts of one event, so a
receiver can drop duplicates), ``webhook-timestamp`` and ``webhook-signature:
v1,<base64 HMAC-SHA256>`` made by the ``standardwebhooks`` library with
``--webhook-secret``. A network error, a timeout, 408, 429 or a 5xx is retried with
exponential backoff (a timer re-queues it; no worker sleeps); any other answer outside
2xx, or an address now refused, ends the delivery. Deliveries of one job are not
ordered across retries: payloads carry the event's ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from flux_server.errors import RefusedTarget
from flux_server.jobs.webhook_url import (
    AllowList,
    IPAddress,
    Resolver,
    WebhookTarget,
    delivery_address,
    system_resolver,
)
from flux_server.metrics import Metrics

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class Delivery:
    """One event for one webhook."""

    job_id: str
    event: str
    message_id: str
    target: WebhookTarget
    body: str
    attempt: int = 1


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def pinned_request(target: WebhookTarget, address: IPAddress | None) -> tuple[str, dict, dict]:
    """(url, headers, httpx extensions) to reach ``target`` at ``address``: the URL
    names the address, ``Host`` and the TLS server name keep the host name."""
    if address is None:
        return target.url, {}, {}
    parts = httpx.URL(target.url)
    shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    default = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default else f"{target.host}:{target.port}"
    url = str(parts.copy_with(host=shown.strip("[]")))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, {"host": host_header}, extensions


class WebhookSender:
    def __init__(
        self,
        secret: str,
        allow: AllowList,
        *,
        metrics: Metrics | None = None,
        max_pending: int = 1000,
        workers: int = 4,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        timeout: float = 10.0,
        resolve: Resolver = system_resolver,
    ) -> None:
        self._signer = Webhook(secret)
        self.allow = allow
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._resolve = resolve
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=max_pending)
        self._workers_wanted = workers
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._client = httpx.AsyncClient(
            follow_redirects=False, timeout=timeout, headers={"user-agent": "fluxserve-webhook"}
        )

    # --- the engine's side: never waits --------------------------------------------------

    def offer(
        self, target: WebhookTarget, job_id: str, seq: int, event: str, payload: Mapping[str, Any]
    ) -> bool:
        """Queue one event's delivery; False (logged, counted) when the queue is full."""
        body = json.dumps(
            {"type": f"job.{event}", "data": payload}, separators=(",", ":"), ensure_ascii=False
        )
        delivery = Delivery(job_id, event, f"msg_{job_id}_{seq}", target, body)
        return self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> bool:
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._count("dropped")
            log.error(
                "webhook dropped: delivery queue full",
                extra={"job_id": delivery.job_id, "event": delivery.event},
            )
            return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._timers)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        while len(self._workers) < self._workers_wanted:
            self._workers.append(asyncio.create_task(self._work()))

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Wait up to ``drain_timeout`` for queued deliveries (not scheduled retries),
        then stop; what is left is logged."""
        if drain_timeout > 0 and self._workers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout)
        for timer in self._timers:
            timer.cancel()
        left = self._queue.qsize() + len(self._timers)
        if left:
            log.warning("webhooks not delivered at shutdown", extra={"count": left})
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        await self._client.aclose()

    # --- the workers ---------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._attempt(delivery)
            except Exception:  # a bug must not stop the worker
                log.exception("webhook delivery crashed", extra={"job_id": delivery.job_id})
            finally:
                self._queue.task_done()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(outcome=outcome).inc()

    def sign(self, message_id: str, when: datetime, body: str) -> dict[str, str]:
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": self._signer.sign(message_id, when, body),
            "content-type": "application/json",
        }

    async def _attempt(self, delivery: Delivery) -> None:
        extra = {"job_id": delivery.job_id, "event": delivery.event, "attempt": delivery.attempt}
        try:
            address = await delivery_address(delivery.target, self.allow, self._resolve)
        except RefusedTarget as exc:
            self._count("refused")
            log.warning("webhook refused: %s", exc.message, extra=extra)
            return
        url, headers, extensions = pinned_request(delivery.target, address)
        headers.update(self.sign(delivery.message_id, datetime.now(tz=timezone.utc), delivery.body))
        try:
            response = await self._client.post(
                url, content=delivery.body.encode(), headers=headers, extensions=extensions
            )
            status: int | None = response.status_code
            problem = f"HTTP {status}"
        except httpx.HTTPError as exc:
            status, problem = None, f"{type(exc).__name__}: {exc}"
        if status is not None and 200 <= status < 300:
            self._count("delivered")
            log.info("webhook delivered", extra={**extra, "status": status})
            return
        retry = status is None or status in RETRY_STATUSES
        if retry and delivery.attempt < self.max_attempts:
            self._count("retried")
            delay = backoff(delivery.attempt, self.backoff_base, self.backoff_cap)
            log.info("webhook failed, retrying: %s", problem, extra={**extra, "delay_s": delay})
            self._schedule(replace(delivery, attempt=delivery.attempt + 1), delay)
            return
        self._count("failed")
        log.warning("webhook failed: %s", problem, extra=extra)

    def _schedule(self, delivery: Delivery, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self._enqueue(delivery)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

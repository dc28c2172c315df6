"""ASGI middleware around the REST application: the body limit, applied before anything
buffers a body, and the request counters and durations."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flux_server.api.rest.convert import error_response
from flux_server.errors import MalformedRequest, PayloadTooLarge
from flux_server.metrics import Metrics

#: Probes and scrapes are not requests: they would drown the request metrics.
UNCOUNTED = {"/metrics", "/healthz", "/readyz"}
#: Answers that stream for as long as a job runs: their duration is the time to the
#: start of the answer, not the job's length (which would swamp the latency quantiles).
STREAMS = {"/jobs/{job_id}/events"}


class Middleware:
    """An ASGI middleware that handles the HTTP requests it :meth:`applies` to and passes
    every other call (lifespan, other requests) to ``app`` untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def applies(self, scope: Scope) -> bool:
        return bool(scope["type"] == "http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.applies(scope):
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodyLimit(Middleware):
    """Refuses request bodies over ``max_bytes`` (by Content-Length, or while streaming)
    before the application buffers them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"the request body is over the limit of {self.max_bytes} bytes", "body"
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(error)(scope, receive, send)
                return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise error
            return message

        try:
            await self.app(scope, limited_receive, send)
        except MalformedRequest as exc:
            if not too_large:
                raise
            await error_response(exc)(scope, receive, send)


class RequestMetrics(Middleware):
    """Counts answers by endpoint and status, and their durations. The endpoint is the
    matched route's template (``/jobs/{job_id}``): bounded labels; a path no route
    matches is ``other``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    def applies(self, scope: Scope) -> bool:
        return super().applies(scope) and scope.get("path", "") not in UNCOUNTED

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        answered: float | None = None  # when the answer started

        async def observed_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            # The router put the matched route in the scope (FastAPI's APIRoute does).
            endpoint = getattr(scope.get("route"), "path", None) or "other"
            ended = answered if endpoint in STREAMS and answered is not None else None
            label = f"rest:{endpoint}"
            self.metrics.requests.labels(endpoint=label, code=str(status)).inc()
            self.metrics.request_duration.labels(endpoint=label).observe(
                (ended or time.perf_counter()) - started
            )

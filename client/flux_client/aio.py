"""``AsyncFluxModelClient``: the SDK's one implementation of every call (``FluxModelClient``
is a blocking shell over it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image as PILImage
from typing_extensions import Unpack

from flux_client._common import (
    DEFAULT_TIMEOUT,
    Attempt,
    ClientSettings,
    GenerationOptions,
    build_edit,
    build_generation,
    build_vqa,
    check_address,
    check_transport,
    log_retry,
    new_request_id,
    with_format_from_path,
    with_request_id,
)
from flux_client._images import ImageArg
from flux_client._operations import (
    EDIT,
    FEEDBACK,
    GENERATE,
    GENERATE_STREAM,
    LIST_EXPERIMENTS,
    LIST_PRESETS,
    SUBMIT,
    VQA,
    Operation,
)
from flux_client._retry import RetryPolicy
from flux_client._transports import Transport, build_transport, detect_protocol
from flux_client.errors import FluxError, InvalidArgumentError, UnavailableError
from flux_client.experiment_report import ExperimentsCounts
from flux_client.job_handles import AsyncJob
from flux_client.jobs import JobSubmission
from flux_client.presets import StylePreset
from flux_client.types import (
    AdaptersArg,
    EditMode,
    FeedbackParams,
    FeedbackResult,
    GenerationResult,
    ImageFormat,
    Priority,
    StreamEvent,
    TransportName,
)

T = TypeVar("T")
Req = TypeVar("Req")
Res = TypeVar("Res")


class AsyncFluxModelClient:
    """An asyncio client of one fluxserve server. Connections open on first use and belong
    to the event loop that opened them: use one client per loop, and close it there.
    Calls may run concurrently (``asyncio.gather``); the server batches them.

    >>> async with AsyncFluxModelClient(host="localhost", port=50051) as client:
    ...     image = await client.generate(prompt="a lighthouse at dawn")

    Calls that fail because the server is unreachable, not ready or draining (UNAVAILABLE
    / 503) are retried with exponential backoff within ``timeout``; other failures raise
    a ``flux_client.errors.FluxError`` subclass at once.

    Args:
        host: The server's host name or address (not a URL).
        port: Its REST port (``--http-port``) or its gRPC port (``--grpc-port``).
        transport: ``"grpc"``, ``"http"`` (REST), or ``"auto"``: the first call asks the
            port once (an HTTP/1.1 ``GET /healthz``, then a gRPC health check) and
            remembers the answer; a port that answers neither is an error naming
            ``transport=``.
        api_key: Sent as ``authorization: Bearer <key>`` when the server requires keys.
        timeout: Seconds for a whole call, retries included; ``None`` waits forever.
        retry: Attempts and backoff for UNAVAILABLE / 503 (default: 4 attempts).
        secure: TLS (https, or a secure gRPC channel with the system's roots).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 50051,
        transport: TransportName = "auto",
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        retry: RetryPolicy | None = None,
        secure: bool = False,
    ) -> None:
        check_address(host, port)
        self.settings = ClientSettings(
            host=host,
            port=port,
            transport=check_transport(transport),
            api_key=api_key,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            secure=secure,
        )
        self._protocol: str | None = None if transport == "auto" else transport
        self._transport: Transport | None = None
        self._detecting = asyncio.Lock()

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"http"``; ``"auto"`` until the first call has found out."""
        return self._protocol or "auto"

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"{type(self).__name__}(host={s.host!r}, port={s.port}, transport={self.transport!r})"
        )

    async def detect_transport(self, *, timeout: float | None = None) -> str:
        """The protocol the server's port speaks, asked once and remembered.

        Args:
            timeout: Seconds to wait for the probe (default: the client's, at most 5 s).

        Returns:
            ``"grpc"`` or ``"http"``.
        """
        await self._get_transport(self.settings.timeout if timeout is None else timeout)
        assert self._protocol is not None
        return self._protocol

    # -- generation ---------------------------------------------------------------

    async def generate(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        style_preset: str | None = None,
        seed: int | None = None,
        output_path: str | Path | None = None,
        *,
        true_cfg_scale: float | None = None,
        output_format: ImageFormat | str | None = None,
        priority: Priority | str = Priority.NORMAL,
        adapters: AdaptersArg = None,
        user_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> PILImage.Image:
        """Generate one image and return it as a PIL image (``image.info`` holds its
        ``seed`` and ``request_id``).

        Unset parameters take the style preset's value, then the server's default
        (1024x1024, 28 steps, guidance 3.5 for FLUX.1-dev).

        Args:
            prompt: What to draw.
            negative_prompt: What to keep out; turns on true classifier-free guidance,
                which costs a second transformer pass per step.
            width: Pixels, a multiple of 16.
            height: Pixels, a multiple of 16.
            steps: Denoising steps.
            guidance_scale: FLUX.1-dev's distilled guidance.
            style_preset: A preset's name: its template wraps the prompt, its values
                fill unset parameters.
            seed: The seed (the server picks one when unset and returns it).
            output_path: Also write the server's bytes here; its suffix picks the
                format unless ``output_format`` does.
            true_cfg_scale: True CFG scale with ``negative_prompt`` (1 ignores it).
            output_format: ``png``, ``jpeg`` or ``webp``.
            priority: ``high`` for the priority lane (keys without the permission are
                served in the normal lane).
            adapters: LoRA adapters to apply: names, or ``{name: scale}``.
            user_id: Who the image is for, when no API key says so (``X-User-Id``): an
                experiment on the style preset serves each user in one arm, always the
                same (``generate_images`` returns it as ``result.experiment``).
            headers: More request headers (gRPC metadata), e.g. the customer group an
                experiment's audience reads.
            timeout: Seconds for this call (default: the client's).
        """
        options = GenerationOptions(
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=guidance_scale,
            true_cfg_scale=true_cfg_scale,
            style_preset=style_preset,
            seed=seed,
            output_format=output_format,
            priority=priority,
            adapters=adapters,
            user_id=user_id,
            headers=headers,
        )
        with_format_from_path(options, output_path)
        result = await self.generate_images(prompt, timeout=timeout, **options)
        if output_path is not None:
            result.images[0].save(output_path)
        return result.first_image()

    async def generate_images(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[GenerationOptions]
    ) -> GenerationResult:
        """Generate ``num_images`` images and return the full result: images with their
        seeds, request id, release, model, the batch size they ran in, timings, cache hit.

        Args:
            prompt: What to draw.
            timeout: Seconds for this call (default: the client's).
            **options: The generation parameters of ``generate``, and ``num_images``.
        """
        return await self._call(GENERATE, build_generation(prompt, options), timeout)

    async def stream(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[GenerationOptions]
    ) -> AsyncIterator[StreamEvent]:
        """Yield a ``Progress`` per denoising step, then the ``GenerationResult`` (gRPC
        only: over REST this raises ``UnsupportedError``). A failure before the first
        event is retried like any call.

        Args:
            prompt: What to draw.
            timeout: Seconds for the whole stream (default: the client's).
            **options: The generation parameters of ``generate``.
        """
        async for event in self._stream(
            GENERATE_STREAM, build_generation(prompt, options), timeout
        ):
            yield event

    async def submit(
        self,
        prompt: str,
        *,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] = (),
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> AsyncJob:
        """Queue a generation as an async job and return it at once: ``job.id``,
        ``await job.status()``, ``await job.wait()`` (the ``GenerationResult``),
        ``await job.cancel()``, ``job.events()``.

        Args:
            prompt: What to draw.
            webhook: A URL the server POSTs the job's events to, signed (Standard
                Webhooks) with its ``--webhook-secret``.
            webhook_events_filter: Any of ``start``, ``progress``, ``completed``
                (default: ``completed``).
            timeout: Seconds for the submission (default: the client's).
            **options: The generation parameters of ``generate``, and ``num_images``.
        """
        submission = JobSubmission(
            build_generation(prompt, options), webhook, tuple(webhook_events_filter)
        )
        info = await self._call(SUBMIT, submission, timeout)
        return AsyncJob(self, info)

    def job(self, job_id: str) -> AsyncJob:
        """A job submitted earlier (by any client, to any replica), by its id."""
        return AsyncJob(self, job_id)

    # -- editing and questions ----------------------------------------------------

    async def edit(
        self,
        image: ImageArg,
        prompt: str,
        mask: ImageArg | None = None,
        strength: float | None = None,
        mode: EditMode | str | None = None,
        *,
        output_path: str | Path | None = None,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> PILImage.Image:
        """Edit an image as ``prompt`` says and return the result as a PIL image.

        Args:
            image: The input: a path, bytes or a PIL image.
            prompt: What the result should show (in ``instruct`` mode: the instruction).
            mask: Inpainting mask, same size; white is repainted.
            strength: For ``img2img``, in (0, 1]: near 0 keeps the input, 1 ignores it.
            mode: ``img2img``, ``inpaint`` or ``instruct`` (needs a Kontext model).
                Unset: inpaint with a mask, img2img without.
            output_path: Also write the result here.
            timeout: Seconds for this call (default: the client's).
            **options: The generation parameters of ``generate``.
        """
        with_format_from_path(options, output_path)
        result = await self.edit_images(
            image, prompt, mask, strength, mode, timeout=timeout, **options
        )
        if output_path is not None:
            result.images[0].save(output_path)
        return result.first_image()

    async def edit_images(
        self,
        image: ImageArg,
        prompt: str,
        mask: ImageArg | None = None,
        strength: float | None = None,
        mode: EditMode | str | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> GenerationResult:
        """``edit``, returning the full result.

        Args:
            image: The input: a path, bytes or a PIL image.
            prompt: What the result should show (in ``instruct`` mode: the instruction).
            mask: Inpainting mask, same size; white is repainted.
            strength: For ``img2img``, in (0, 1].
            mode: ``img2img``, ``inpaint`` or ``instruct``.
            timeout: Seconds for this call (default: the client's).
            **options: The generation parameters of ``generate``, and ``num_images``.
        """
        request = build_edit(image, prompt, mask, strength, mode, options)
        return await self._call(EDIT, request, timeout)

    async def vqa(
        self, image: ImageArg, question: str, max_tokens: int = 64, *, timeout: float | None = None
    ) -> str:
        """Answer a question about an image (a server started with ``--vqa-model``).

        Args:
            image: A path, bytes or a PIL image.
            question: The question.
            max_tokens: The longest answer, in tokens.
            timeout: Seconds for this call (default: the client's).
        """
        result = await self._call(VQA, build_vqa(image, question, max_tokens), timeout)
        return result.answer

    async def list_presets(self, *, timeout: float | None = None) -> dict[str, StylePreset]:
        """The style presets the server serves now, by name.

        Args:
            timeout: Seconds for this call (default: the client's).
        """
        return await self._call(LIST_PRESETS, None, timeout)

    # -- experiments --------------------------------------------------------------

    async def feedback(
        self, request_id: str, event: str, value: float = 1, *, timeout: float | None = None
    ) -> FeedbackResult:
        """Record an outcome of a request served in an experiment, against its arm (an
        event counts once per request). ``NotFoundError`` for an unknown or expired id.

        Args:
            request_id: The served request's id (``result.request_id``).
            event: A free-form event name: ``like``, ``download``, ...
            value: 1 when the event happened; between 0 and 1.
            timeout: Seconds for this call (default: the client's).
        """
        try:
            params = FeedbackParams(request_id=request_id, event=event, value=value)
        except ValueError as error:
            raise InvalidArgumentError(str(error), code="invalid_argument") from None
        return await self._call(FEEDBACK, params, timeout)

    async def list_experiments(self, *, timeout: float | None = None) -> ExperimentsCounts:
        """The experiments this server serves, with its own counts per arm (the input of
        ``flux_client.experiment_report``).

        Args:
            timeout: Seconds for this call (default: the client's).
        """
        return await self._call(LIST_EXPERIMENTS, None, timeout)

    # -- readiness ----------------------------------------------------------------

    async def is_ready(self, *, timeout: float = 5.0) -> bool:
        """Whether the server has loaded and warmed its model (gRPC health SERVING, or
        ``GET /readyz`` 200); ``False`` while it is unreachable, loading or draining.

        Args:
            timeout: Seconds to wait for the answer.
        """
        try:
            transport = await self._get_transport(timeout)
        except UnavailableError:
            return False
        return await transport.ready(timeout)

    async def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> None:
        """Poll readiness until the server is ready; ``UnavailableError`` after ``timeout``.

        Args:
            timeout: Seconds to wait in all.
            poll: Seconds between two checks.
        """
        deadline = time.monotonic() + timeout
        while not await self.is_ready(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"server {self.settings.host}:{self.settings.port} not ready after {timeout} s",
                    code="unavailable",
                )
            await asyncio.sleep(poll)

    # -- plumbing -----------------------------------------------------------------

    async def _get_transport(self, timeout: float | None) -> Transport:
        if self._transport is None:
            async with self._detecting:  # concurrent first calls probe once
                if self._protocol is None:
                    self._protocol = await detect_protocol(self.settings, timeout)
                if self._transport is None:
                    self._transport = build_transport(self.settings, self._protocol)
        return self._transport

    def _deadline(self, timeout: float | None) -> float | None:
        budget = self.settings.timeout if timeout is None else timeout
        return None if budget is None else time.monotonic() + budget

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    async def _stream(
        self, op: Operation[Req, Res], request: Req, timeout: float | None
    ) -> AsyncIterator[Res]:
        """An operation's events; a failure before the first one is retried like a call."""
        deadline = self._deadline(timeout)
        request_id = new_request_id()
        attempt = 0
        while True:
            attempt += 1
            started = False
            call = Attempt(self._remaining(deadline), request_id)
            try:
                transport = await self._get_transport(call.timeout)
                async for event in transport.stream(op, request, call):
                    started = True
                    yield event
                return
            except FluxError as error:
                wait = None if started else self.settings.retry.next_delay(attempt, error, deadline)
                if wait is None:
                    raise with_request_id(error, request_id) from None
                log_retry(error, request_id, attempt, wait)
                await asyncio.sleep(wait)

    async def _call(self, op: Operation[Req, Res], request: Req, timeout: float | None) -> Res:
        async def send(call: Attempt) -> Res:
            transport = await self._get_transport(call.timeout)
            return await transport.unary(op, request, call)

        return await self._retrying(send, timeout)

    async def _retrying(self, send: Callable[[Attempt], Awaitable[T]], timeout: float | None) -> T:
        deadline = self._deadline(timeout)
        request_id = new_request_id()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await send(Attempt(self._remaining(deadline), request_id))
            except FluxError as error:
                wait = self.settings.retry.next_delay(attempt, error, deadline)
                if wait is None:
                    raise with_request_id(error, request_id) from None
                log_retry(error, request_id, attempt, wait)
                await asyncio.sleep(wait)

    async def close(self) -> None:
        """Release the connection."""
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def __aenter__(self) -> AsyncFluxModelClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

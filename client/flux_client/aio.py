"""``AsyncFluxModelClient``: the asyncio twin of ``FluxModelClient``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
    log_retry,
    new_request_id,
    resolve_transport,
    with_format_from_path,
    with_request_id,
)
from flux_client._grpc import AsyncGrpcTransport
from flux_client._http import AsyncHttpTransport, base_url
from flux_client._images import ImageArg
from flux_client._retry import RetryPolicy
from flux_client.errors import FluxError, UnavailableError
from flux_client.presets import StylePreset
from flux_client.types import (
    AdaptersArg,
    EditMode,
    GenerationResult,
    ImageFormat,
    Priority,
    StreamEvent,
    TransportName,
)

T = TypeVar("T")


class AsyncFluxModelClient:
    """An asyncio client of one fluxserve server; the same methods as ``FluxModelClient``,
    awaitable (``stream`` is an async iterator). Connections open on first use and belong
    to the event loop that opened them: use one client per loop, and close it there.
    Calls may run concurrently (``asyncio.gather``); the server batches them.

    >>> async with AsyncFluxModelClient(host="localhost", port=50051) as client:
    ...     image = await client.generate(prompt="a lighthouse at dawn")

    ``transport="auto"`` speaks REST to port 8080 (the server's HTTP port, as in the
    examples) and gRPC to any other port (the server's gRPC port is 50051); name it to
    choose. Calls that fail because the server is unreachable, not ready or draining
    (UNAVAILABLE / 503) are retried with exponential backoff within ``timeout``; other
    failures raise a ``flux_client.errors.FluxError`` subclass at once.
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
            transport=resolve_transport(port, transport),
            api_key=api_key,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            secure=secure,
        )
        self._transport: AsyncGrpcTransport | AsyncHttpTransport
        if self.settings.transport == "grpc":
            self._transport = AsyncGrpcTransport(
                self.settings.grpc_target, api_key=api_key, secure=secure
            )
        else:
            self._transport = AsyncHttpTransport(base_url(host, port, secure), api_key=api_key)

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"http"``."""
        return self.settings.transport

    def __repr__(self) -> str:
        s = self.settings
        return f"AsyncFluxModelClient(host={s.host!r}, port={s.port}, transport={s.transport!r})"

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
        timeout: float | None = None,
    ) -> PILImage.Image:
        """Generate one image and return it as a PIL image (``image.info`` holds its
        ``seed`` and ``request_id``); write the server's bytes to ``output_path`` when
        given (its suffix picks the format unless ``output_format`` does).

        Unset parameters take the style preset's value, then the server's default
        (1024x1024, 28 steps, guidance 3.5 for FLUX.1-dev). A ``negative_prompt``
        turns on true classifier-free guidance, which costs a second transformer pass per
        step: the server uses its default ``true_cfg_scale`` when none is given, and
        ``true_cfg_scale=1`` ignores the negative prompt.
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
        )
        with_format_from_path(options, output_path)
        result = await self.generate_images(prompt, timeout=timeout, **options)
        if output_path is not None:
            result.images[0].save(output_path)
        return result.first_image()

    async def generate_images(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[GenerationOptions]
    ) -> GenerationResult:
        """Generate ``num_images`` images; the full result: images with their seeds,
        request id, release, model, the batch size they ran in, timings, cache hit."""
        params = build_generation(prompt, options)
        return await self._call(lambda call: self._transport.generate(params, call), timeout)

    async def stream(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[GenerationOptions]
    ) -> AsyncIterator[StreamEvent]:
        """Yield a ``Progress`` per denoising step, then the ``GenerationResult`` (gRPC
        only). A failure before the first event is retried like any call."""
        params = build_generation(prompt, options)
        deadline = self._deadline(timeout)
        request_id = new_request_id()
        attempt = 0
        while True:
            attempt += 1
            started = False
            try:
                async for event in self._transport.stream(
                    params, Attempt(self._remaining(deadline), request_id)
                ):
                    started = True
                    yield event
                return
            except FluxError as error:
                wait = None if started else self.settings.retry.next_delay(attempt, error, deadline)
                if wait is None:
                    raise with_request_id(error, request_id) from None
                log_retry(error, request_id, attempt, wait)
                await asyncio.sleep(wait)

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
        """Edit ``image`` (a path, bytes or a PIL image) as ``prompt`` says and return the
        result as a PIL image, written to ``output_path`` when given.

        ``mode``: ``img2img`` (``strength`` in (0, 1]: near 0 keeps the input, 1 ignores
        it), ``inpaint`` (repaint the white area of ``mask``) or ``instruct`` (the prompt is an
        instruction; needs a server with a Kontext model). Unset: inpaint with a mask,
        img2img without.
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
        """``edit``, returning the full result."""
        request = build_edit(image, prompt, mask, strength, mode, options)
        return await self._call(lambda call: self._transport.edit(request, call), timeout)

    async def vqa(
        self,
        image: ImageArg,
        question: str,
        max_tokens: int = 64,
        *,
        timeout: float | None = None,
    ) -> str:
        """Answer ``question`` about ``image`` (a path, bytes or a PIL image)."""
        request = build_vqa(image, question, max_tokens)
        result = await self._call(lambda call: self._transport.vqa(request, call), timeout)
        return result.answer

    async def list_presets(self, *, timeout: float | None = None) -> dict[str, StylePreset]:
        """The style presets the server serves now, by name."""
        return await self._call(self._transport.list_presets, timeout)

    # -- readiness ----------------------------------------------------------------

    async def is_ready(self, *, timeout: float = 5.0) -> bool:
        """Whether the server has loaded and warmed its model (gRPC health SERVING, or
        ``GET /readyz`` 200); ``False`` while it is unreachable, loading or draining."""
        return await self._transport.ready(timeout)

    async def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> None:
        """Poll readiness until the server is ready; ``UnavailableError`` after ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while not await self.is_ready(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"server {self.settings.host}:{self.settings.port} not ready after {timeout} s",
                    code="unavailable",
                )
            await asyncio.sleep(poll)

    # -- plumbing -----------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float | None:
        budget = self.settings.timeout if timeout is None else timeout
        return None if budget is None else time.monotonic() + budget

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    async def _call(self, send: Callable[[Attempt], Awaitable[T]], timeout: float | None) -> T:
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
        await self._transport.close()

    async def __aenter__(self) -> AsyncFluxModelClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

"""``AsyncFluxModelClient``: the SDK's one implementation of every call (``FluxModelClient``
is a blocking shell over it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image as PILImage
from typing_extensions import Unpack

from flux_client._aio_experiments import ExperimentCalls
from flux_client._aio_jobs import JobCalls
from flux_client._common import (
    GenerationOptions,
    build_edit,
    build_generation,
    build_vqa,
    options_among,
    with_format_from_path,
)
from flux_client._images import ImageArg
from flux_client._operations import (
    EDIT,
    GENERATE,
    GENERATE_STREAM,
    LIST_PRESETS,
    VQA,
)
from flux_client.errors import FluxError
from flux_client.types import (
    AdaptersArg,
    EditMode,
    GenerationResult,
    ImageFormat,
    Preview,
    PreviewCallback,
    Priority,
    StreamEvent,
)
from flux_contract.presets import StylePreset


def _first_image(result: GenerationResult, output_path: str | Path | None) -> PILImage.Image:
    """The result's first image, its bytes also written to ``output_path`` when given."""
    if output_path is not None:
        result.images[0].save(output_path)
    return result.first_image()


class AsyncFluxModelClient(JobCalls, ExperimentCalls):
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
        options = options_among(locals())
        with_format_from_path(options, output_path)
        result = await self.generate_images(prompt, timeout=timeout, **options)
        return _first_image(result, output_path)

    async def generate_images(
        self,
        prompt: str,
        *,
        timeout: float | None = None,
        on_preview: PreviewCallback | None = None,
        **options: Unpack[GenerationOptions],
    ) -> GenerationResult:
        """Generate ``num_images`` images and return the full result: images with their
        seeds, request id, release, model, the batch size they ran in, timings, cache hit.

        Args:
            prompt: What to draw.
            timeout: Seconds for this call (default: the client's).
            on_preview: Called with a ``Preview`` (a small image decoded from the latents)
                every few denoising steps, the server's ``--preview-every``; it asks for
                previews and streams them (gRPC only: over REST this raises
                ``UnsupportedError``; a job's ``wait(on_preview=...)`` works on both).
            **options: The generation parameters of ``generate``, and ``num_images``.
        """
        params = build_generation(prompt, options)
        if on_preview is None:
            return await self._call(GENERATE, params, timeout)
        params.previews = True
        async for event in self._stream(GENERATE_STREAM, params, timeout):
            if isinstance(event, Preview):
                on_preview(event)
            elif isinstance(event, GenerationResult):
                return event
        raise FluxError("the preview stream ended without a result", code="internal")

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
        return _first_image(result, output_path)

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

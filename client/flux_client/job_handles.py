"""The handles ``submit()`` returns: :class:`AsyncJob` (``AsyncFluxModelClient``) and
:class:`Job` (``FluxModelClient``), one async job each, over whichever transport the
client speaks. Any replica answers for any job when the servers share Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from flux_client._aio_core import ClientCore
from flux_client._loop_thread import LoopThread
from flux_client._operations import CANCEL_JOB, GET_JOB, WATCH_JOB, job_image
from flux_client.errors import DeadlineExceededError, FluxError, error_class
from flux_client.jobs import JobEvent, JobInfo, JobStatus
from flux_client.types import (
    GeneratedImage,
    GenerationResult,
    ImageFormat,
    Preview,
    PreviewCallback,
    Timings,
)


class JobCanceledError(FluxError):
    """The job was cancelled before it finished: it has no result."""


def outcome_error(info: JobInfo) -> FluxError:
    """The error ``wait()`` raises for a job that failed or was cancelled: the class a
    synchronous call would have raised for the same reason."""
    if info.status is JobStatus.CANCELED:
        return JobCanceledError(f"job {info.id} was cancelled", code="canceled")
    failure = info.error
    if failure is None:
        return FluxError(f"job {info.id} failed", code="internal")
    return error_class(failure.code)(failure.message, field=failure.field, code=failure.code)


class AsyncJob:
    """One async job. ``wait()`` returns the same ``GenerationResult`` as
    ``generate_images`` (``.first_image()`` is what ``generate`` returns)."""

    def __init__(self, client: ClientCore, job: JobInfo | str) -> None:
        self._client = client
        self.id = job.id if isinstance(job, JobInfo) else job
        self.info = job if isinstance(job, JobInfo) else None
        """The state last read (by ``submit``, ``status`` or ``cancel``)."""

    def __repr__(self) -> str:
        status = self.info.status.value if self.info else "?"
        return f"AsyncJob(id={self.id!r}, status={status!r})"

    async def status(self, *, timeout: float | None = None) -> JobInfo:
        """The job now: status, queue position, progress, error or images, and the
        experiment arm it was assigned (``experiment``)."""
        self.info = await self._client._call(GET_JOB, self.id, timeout)
        return self.info

    async def cancel(self, *, timeout: float | None = None) -> JobInfo:
        """Cancel it: a queued job leaves the queue, a running one stops at the next
        denoising step; a finished one stays as it was (the state says which)."""
        self.info = await self._client._call(CANCEL_JOB, self.id, timeout)
        return self.info

    async def events(self, *, timeout: float | None = None) -> AsyncIterator[JobEvent]:
        """The current state as events, then ``queued``/``running``/``progress`` as they
        happen, ending with exactly one of ``succeeded``, ``failed``, ``canceled``.

        Args:
            timeout: Seconds to wait for each read of the stream (the server sends a
                keep-alive every 15 s); default: the client's.
        """
        async for event in self._client._stream(WATCH_JOB, self.id, timeout):
            yield event
            if event.terminal:
                return

    async def wait(
        self, timeout: float | None = None, *, on_preview: PreviewCallback | None = None
    ) -> GenerationResult:
        """Wait for the outcome: the result on success; on failure the error a
        synchronous call would have raised; ``JobCanceledError`` when cancelled;
        ``DeadlineExceededError`` after ``timeout`` seconds (None: no limit).
        ``on_preview`` hears the job's live previews (submitted with ``previews=True``),
        in order, as its events bring them."""
        try:
            info = await asyncio.wait_for(self._outcome(on_preview), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"job {self.id} did not finish within {timeout} s (it goes on; "
                "wait again or cancel it)",
                code="deadline_exceeded",
            ) from None
        if info.status is not JobStatus.SUCCEEDED:
            raise outcome_error(info)
        return await self._result(info)

    async def _outcome(self, on_preview: PreviewCallback | None = None) -> JobInfo:
        while True:
            try:
                async for event in self.events():
                    if on_preview is not None and event.kind == "preview":
                        on_preview(Preview.from_event(event.data, self.id))
                break
            except DeadlineExceededError:
                continue  # a quiet stream outlived a read: watch again
        return await self.status()

    async def _result(self, info: JobInfo) -> GenerationResult:
        images = []
        for index, image in enumerate(info.images):
            data = image.data
            if data is None:  # REST: each image at its own URL
                data = await self._client._call(job_image(index), self.id, None)
            images.append(
                GeneratedImage(
                    data=data,
                    format=ImageFormat.parse(image.format),
                    width=image.width,
                    height=image.height,
                    seed=image.seed,
                )
            )
        timings = Timings()
        if info.started_at and info.created_at:
            timings.queue_ms = (info.started_at - info.created_at).total_seconds() * 1000
        if info.completed_at and info.created_at:
            timings.total_ms = (info.completed_at - info.created_at).total_seconds() * 1000
            if info.started_at:
                timings.inference_ms = (info.completed_at - info.started_at).total_seconds() * 1000
        return GenerationResult(
            images=images, request_id=self.id, timings=timings, experiment=info.experiment
        )


class Job:
    """The blocking twin of :class:`AsyncJob` (``FluxModelClient.submit``)."""

    def __init__(self, loop: LoopThread, job: AsyncJob) -> None:
        self._loop = loop
        self._job = job
        self.id = job.id

    @property
    def info(self) -> JobInfo | None:
        return self._job.info

    def __repr__(self) -> str:
        return repr(self._job).replace("AsyncJob", "Job", 1)

    def status(self, *, timeout: float | None = None) -> JobInfo:
        return self._loop.run(self._job.status(timeout=timeout))

    def cancel(self, *, timeout: float | None = None) -> JobInfo:
        return self._loop.run(self._job.cancel(timeout=timeout))

    def events(self, *, timeout: float | None = None) -> Iterator[JobEvent]:
        return self._loop.iterate(self._job.events(timeout=timeout))

    def wait(
        self, timeout: float | None = None, *, on_preview: PreviewCallback | None = None
    ) -> GenerationResult:
        return self._loop.run(self._job.wait(timeout, on_preview=on_preview))

    status.__doc__ = AsyncJob.status.__doc__
    cancel.__doc__ = AsyncJob.cancel.__doc__
    events.__doc__ = AsyncJob.events.__doc__
    wait.__doc__ = AsyncJob.wait.__doc__

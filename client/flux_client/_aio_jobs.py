"""The async client's job calls: ``submit`` a generation as an async job, or take one up
by its id (the handles are in ``flux_client.job_handles``)."""

from __future__ import annotations

from collections.abc import Sequence

from typing_extensions import Unpack

from flux_client._aio_core import ClientCore
from flux_client._common import GenerationOptions, build_generation
from flux_client._operations import SUBMIT
from flux_client.job_handles import AsyncJob
from flux_client.jobs import JobSubmission


class JobCalls(ClientCore):
    """``submit`` and ``job`` of ``AsyncFluxModelClient``."""

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

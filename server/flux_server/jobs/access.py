"""A caller's view of the async jobs: with API keys, a job is its submitter's alone.

Reading, watching, cancelling or fetching the images of another user's job answers as
for an unknown id (404 ``unknown_id``, gRPC NOT_FOUND), so whether the id exists is not
told either. Without keys nobody has a name and the job id alone (128 random bits) is
what protects a job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from flux_server.jobs.manager import JobManager
from flux_server.jobs.records import JobEvent, JobState


class OwnedJobs:
    """The jobs ``user`` may see (every job when ``user`` is None and so are theirs)."""

    def __init__(self, jobs: JobManager, user: str | None) -> None:
        self._jobs = jobs
        self.user = user

    async def get(self, job_id: str) -> JobState:
        state = await self._jobs.get(job_id)
        if state.user is not None and state.user != self.user:
            raise self._jobs.store.missing(job_id)
        return state

    async def image(self, state: JobState, index: int) -> bytes:
        """Image ``index`` of a job :meth:`get` returned (its owner already checked)."""
        return await self._jobs.image(state.id, index)

    async def cancel(self, job_id: str) -> JobState:
        await self.get(job_id)
        return await self._jobs.cancel(job_id)

    def watch(self, state: JobState) -> AsyncIterator[JobEvent]:
        """The events of a job :meth:`get` returned (its owner already checked)."""
        return self._jobs.watch(state.id)

"""The async client's experiment calls: ``feedback`` on a served request and the
experiments' counts (``list_experiments``)."""

from __future__ import annotations

from flux_client._aio_core import ClientCore
from flux_client._operations import FEEDBACK, LIST_EXPERIMENTS
from flux_client.errors import InvalidArgumentError
from flux_client.types import FeedbackParams, FeedbackResult
from flux_contract.experiment_counts import ExperimentsCounts


class ExperimentCalls(ClientCore):
    """``feedback`` and ``list_experiments`` of ``AsyncFluxModelClient``."""

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

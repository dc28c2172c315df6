"""Experiments over REST: ``POST /feedback`` records an outcome against the arm a request
was served in; ``GET /experiments`` lists this replica's experiments with its own counts
(the body ``python -m flux_client experiments`` reads)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.names import MAX_NAME_LENGTH
from flux_server.api.rest.convert import context_from, json_body, refuse_query
from flux_server.api.rest.openapi import ERROR_RESPONSES, error_answer, request_body
from flux_server.experiments.feedback import MAX_REQUEST_ID
from flux_server.requests.params import validation_error
from flux_server.service.core import GenerationService


class FeedbackBody(BaseModel):
    """An outcome of a request served in an experiment."""

    model_config = ConfigDict(extra="forbid")

    # The limits are checked by feedback.check_feedback (its messages name them); the
    # schema says them so that it accepts only what the server does.
    request_id: str = Field(
        description="The served request's id (X-Request-Id).",
        json_schema_extra={"minLength": 1, "maxLength": MAX_REQUEST_ID},
    )
    event: str = Field(
        description="A free-form event name, e.g. like, download, share.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME_LENGTH},
    )
    value: float = Field(
        1.0,
        description="1: the event happened; between 0 and 1.",
        json_schema_extra={"minimum": 0, "maximum": 1},
    )


class FeedbackAnswer(BaseModel):
    request_id: str
    experiment: str
    arm: str
    event: str
    counted: bool = Field(description="False when this request already had this event.")


def experiment_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/feedback",
        summary="Record an outcome of a request served in an experiment",
        openapi_extra={
            "requestBody": request_body({"application/json": FeedbackBody.model_json_schema()})
        },
        response_model=FeedbackAnswer,
        responses={
            404: error_answer("Unknown or expired request id."),
            **ERROR_RESPONSES,
        },
    )
    async def feedback(request: Request) -> FeedbackAnswer:
        ctx = context_from(request, "rest:/feedback")
        refuse_query(request)
        try:
            body = FeedbackBody.model_validate(await json_body(request))
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None
        outcome = await service.feedback(body.request_id, body.event, body.value, ctx)
        return FeedbackAnswer(
            request_id=body.request_id,
            experiment=outcome.record.experiment,
            arm=outcome.record.arm,
            event=body.event,
            counted=outcome.counted,
        )

    @router.get(
        "/experiments",
        summary="The experiments this replica serves, with its own counts",
        response_model=ExperimentsCounts,
    )
    async def experiments() -> ExperimentsCounts:
        return service.list_experiments()

    return router

"""What ``/openapi.json`` says of async jobs: the job's schema, the ``Prefer`` header and
the ``202`` of a submission, the fields a submission's body may add, and the answers of
the ``/jobs/{id}`` routes."""

from __future__ import annotations

from typing import Any

from flux_contract.experiments import ExperimentArm
from flux_server.api.rest.openapi import ERROR_SCHEMA, error_answer
from flux_server.jobs.records import JobStatus

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["generate", "edit"]},
        "status": {"type": "string", "enum": [s.value for s in JobStatus]},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "completed_at": {"type": ["string", "null"], "format": "date-time"},
        "queue_position": {"type": "integer", "description": "0-based, while queued."},
        "progress": {
            "type": "object",
            "properties": {"step": {"type": "integer"}, "total": {"type": "integer"}},
        },
        "error": ERROR_SCHEMA["properties"]["error"],
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "seed": {"type": "integer"},
                    "format": {"type": "string"},
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "url": {"type": "string", "description": "GET it for the image's bytes."},
                },
            },
        },
        "urls": {"type": "object", "additionalProperties": {"type": "string"}},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "experiment": {
            "anyOf": [ExperimentArm.model_json_schema(), {"type": "null"}],
            "description": "The experiment arm assigned at submission (as a synchronous "
            "answer's JSON names it); null outside any experiment.",
        },
    },
    "required": ["id", "status", "created_at", "urls"],
}
PREFER_HEADER: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "respond-async: answer 202 with the job at once (see /jobs/{id}); the "
    "body may then carry webhook and webhook_events_filter.",
    "schema": {"type": "string", "example": "respond-async"},
}
ACCEPTED_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "With Prefer: respond-async: the job, queued. Location: /jobs/{id}.",
        "content": {"application/json": {"schema": JOB_SCHEMA}},
    }
}


def job_answers(content: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The answers of a ``/jobs/{id}`` route: ``content`` (by media type), or an error."""
    return {
        200: {"content": content},
        401: error_answer("A missing or unknown API key."),
        404: error_answer("No such job: unknown, or expired (the message names --job-ttl)."),
        503: error_answer("The job store (Redis) is unreachable."),
    }


JOB_ANSWERS = job_answers({"application/json": {"schema": JOB_SCHEMA}})
"""The answers of the routes that return the job."""


def with_async_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """A request body's schema with the fields an async submission may add (its
    ``$defs`` are moved to the document's components by ``hoist_defs``)."""
    properties = {
        **schema.get("properties", {}),
        "webhook": {
            "type": "string",
            "format": "uri",
            "description": "With Prefer: respond-async: POSTed the job's events, signed "
            "(Standard Webhooks); private addresses are refused unless allowed.",
        },
        "webhook_events_filter": {
            "type": "array",
            "items": {"type": "string", "enum": ["start", "progress", "completed"]},
            "default": ["completed"],
        },
    }
    return {**schema, "properties": properties}

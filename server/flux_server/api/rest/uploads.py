"""The routes that take an uploaded image: ``POST /edit`` and ``POST /vqa`` (multipart,
or JSON with the images in base64)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from flux_server.api.rest.convert import (
    context_from,
    parse_params,
    result_response,
    unless_disconnected,
    upload_fields,
)
from flux_server.api.rest.jobs import accepted_response, pop_async_fields, wants_async
from flux_server.api.rest.jobs_openapi import ACCEPTED_RESPONSE, PREFER_HEADER, with_async_fields
from flux_server.api.rest.openapi import (
    IMAGE_OR_JSON_RESPONSE,
    UPLOAD_ERROR_RESPONSES,
    request_body,
)
from flux_server.errors import InvalidRequest
from flux_server.requests.edits import EDIT_FIELDS, edit_body_schema, edit_options
from flux_server.requests.params import GenerateParams
from flux_server.requests.questions import question_fields, vqa_body_schema
from flux_server.service.core import GenerationService
from flux_server.service.intake import EditRequest


def upload_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()
    _edit_route(router, service)
    _vqa_route(router, service)
    return router


def _edit_openapi() -> dict[str, Any]:
    # Its $defs go to the document's components (hoist_defs).
    params_schema = GenerateParams.model_json_schema()
    body = request_body(
        {
            "multipart/form-data": with_async_fields(edit_body_schema(params_schema, upload=True)),
            "application/json": with_async_fields(edit_body_schema(params_schema, upload=False)),
        }
    )
    return {"requestBody": body, "parameters": [PREFER_HEADER]}


def _edit_route(router: APIRouter, service: GenerationService) -> None:
    @router.post(
        "/edit",
        summary="Edit an image (multipart: image, mask?, prompt, strength, mode; "
        "or JSON with base64 image and mask)",
        openapi_extra=_edit_openapi(),
        responses={
            **IMAGE_OR_JSON_RESPONSE,
            **ACCEPTED_RESPONSE,
            **UPLOAD_ERROR_RESPONSES,
        },
    )
    async def edit(request: Request) -> Response:
        ctx = context_from(request, "rest:/edit")
        fields, files = await upload_fields(request, ("image", "mask"))
        if "image" not in files:
            raise InvalidRequest(
                "send the image to edit (an 'image' file, or base64 in JSON)", "image"
            )
        mode, strength = edit_options(fields)
        asynchronous = wants_async(request)
        webhook, events = pop_async_fields(fields, asynchronous)
        params = parse_params({k: v for k, v in fields.items() if k not in EDIT_FIELDS})
        edit = EditRequest(files["image"], files.get("mask"), mode, strength, params)
        if asynchronous:
            state = await service.submit_edit(edit, ctx, webhook, events)
            return accepted_response(state, ctx.request_id)
        result = await unless_disconnected(request, service.edit(edit, ctx))
        return result_response(request, result)


_VQA_ANSWER = {
    "description": "The answer.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "answer": {"type": "string"},
                    "request_id": {"type": "string"},
                    "model": {"type": ["string", "null"]},
                },
                "required": ["answer", "request_id", "model"],
            }
        }
    },
}


def _vqa_route(router: APIRouter, service: GenerationService) -> None:
    @router.post(
        "/vqa",
        summary="Answer a question about an image (multipart, or JSON base64)",
        openapi_extra={
            "requestBody": request_body(
                {
                    "multipart/form-data": vqa_body_schema(upload=True),
                    "application/json": vqa_body_schema(upload=False),
                }
            )
        },
        responses={200: _VQA_ANSWER, **UPLOAD_ERROR_RESPONSES},
    )
    async def vqa(request: Request) -> JSONResponse:
        ctx = context_from(request, "rest:/vqa")
        fields, files = await upload_fields(request, ("image",))
        if "image" not in files:
            raise InvalidRequest("send the image (a file, or base64 in JSON)", "image")
        question, max_tokens = question_fields(fields)
        answer = await unless_disconnected(
            request,
            service.vqa(
                image=files["image"],
                question=question,
                max_tokens=max_tokens,
                ctx=ctx,
            ),
        )
        return JSONResponse(
            {"answer": answer, "request_id": ctx.request_id, "model": service.settings.vqa_model},
            headers={"X-Request-Id": ctx.request_id},
        )

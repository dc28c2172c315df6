"""``POST /generate``: the article's JSON body in, ``image/png`` (the first image) out,
or with ``Accept: application/json`` every image in base64 with seeds and timings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from flux_server.api.rest.convert import (
    context_from,
    json_body,
    parse_params,
    refuse_query,
    result_response,
    unless_disconnected,
)
from flux_server.api.rest.jobs import accepted_response, pop_async_fields, wants_async
from flux_server.api.rest.jobs_openapi import ACCEPTED_RESPONSE, PREFER_HEADER, with_async_fields
from flux_server.api.rest.openapi import (
    CALL_HEADERS,
    ERROR_RESPONSES,
    IMAGE_OR_JSON_RESPONSE,
    WEBHOOK_OFF_RESPONSE,
    request_body,
)
from flux_server.requests.params import GenerateParams
from flux_server.service.core import GenerationService


def generation_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/generate",
        summary="Generate images",
        openapi_extra={
            "requestBody": request_body(
                {"application/json": with_async_fields(GenerateParams.model_json_schema())}
            ),
            "parameters": [*CALL_HEADERS, PREFER_HEADER],
        },
        responses={
            **IMAGE_OR_JSON_RESPONSE,
            **ACCEPTED_RESPONSE,
            **ERROR_RESPONSES,
            **WEBHOOK_OFF_RESPONSE,
        },
    )
    async def generate(request: Request) -> Response:
        ctx = context_from(request, "rest:/generate")
        refuse_query(request)
        body = await json_body(request)
        asynchronous = wants_async(request)
        webhook, events = pop_async_fields(body, asynchronous)
        params = parse_params(body)
        if asynchronous:
            state = await service.submit(params, ctx, webhook, events)
            return accepted_response(state, ctx.request_id)
        result = await unless_disconnected(request, service.generate(params, ctx))
        return result_response(request, result)

    return router

"""``POST /generate``: the article's JSON body in, ``image/png`` (the first image) out,
or with ``Accept: application/json`` every image in base64 with seeds and timings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from flux_server.params import GenerateParams
from flux_server.rest.openapi import CALL_HEADERS, ERROR_RESPONSES, self_contained
from flux_server.rest.wire import (
    context_from,
    json_body,
    parse_params,
    refuse_query,
    result_response,
    unless_disconnected,
)
from flux_server.service import GenerationService


def generation_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/generate",
        summary="Generate images",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": self_contained(GenerateParams.model_json_schema())
                    }
                },
            },
            "parameters": CALL_HEADERS,
        },
        responses={200: {"content": {"image/png": {}, "application/json": {}}}, **ERROR_RESPONSES},
    )
    async def generate(request: Request) -> Response:
        ctx = context_from(request, "rest:/generate")
        refuse_query(request)
        params = parse_params(await json_body(request))
        result = await unless_disconnected(request, service.generate(params, ctx))
        return result_response(request, result)

    return router

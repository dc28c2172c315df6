"""Error mapping and retry rules, as pure functions (the transports are tested over sockets)."""

from __future__ import annotations

import random

import httpx
import pytest

from flux_client import (
    AuthenticationError,
    ContentRejectedError,
    DeadlineExceededError,
    FluxError,
    InvalidArgumentError,
    NotEnabledError,
    OverloadedError,
    PermissionDeniedError,
    RetryPolicy,
    ServerError,
    UnavailableError,
)
from flux_client._http import error_from_response, error_from_transport, params_to_json
from flux_client.errors import REASON_ERRORS, error_class
from flux_client.types import GenerationParams
from flux_client.wire import reason_for_grpc_code


def _response(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://server/generate")
    if body is None:
        return httpx.Response(status, text="plain words", headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidArgumentError),
        (413, InvalidArgumentError),
        (422, InvalidArgumentError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotEnabledError),
        (429, OverloadedError),
        (503, UnavailableError),
        (504, DeadlineExceededError),
        (499, FluxError),
        (500, ServerError),
        (507, ServerError),
    ],
)
def test_http_statuses_without_a_code_map_to_error_classes(status: int, cls: type) -> None:
    """A proxy's answer, or a server older than the reasons: the status decides."""
    assert type(error_from_response(_response(status))) is cls


def test_error_codes_narrow_the_class() -> None:
    assert error_class("content_rejected") is ContentRejectedError
    assert error_class("invalid_argument") is InvalidArgumentError
    assert error_class("unknown_name") is InvalidArgumentError


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("INVALID_ARGUMENT", InvalidArgumentError),
        ("UNAUTHENTICATED", AuthenticationError),
        ("PERMISSION_DENIED", PermissionDeniedError),
        ("RESOURCE_EXHAUSTED", OverloadedError),
        ("UNAVAILABLE", UnavailableError),
        ("DEADLINE_EXCEEDED", DeadlineExceededError),
        ("UNIMPLEMENTED", NotEnabledError),
        ("INTERNAL", ServerError),
    ],
)
def test_grpc_codes_map_to_error_classes(code: str, cls: type) -> None:
    assert error_class(reason_for_grpc_code(code) or code.lower()) is cls


def test_only_unavailable_is_retryable() -> None:
    retryable = {cls for cls in REASON_ERRORS.values() if cls.retryable}
    assert retryable == {UnavailableError}


def test_contract_error_body() -> None:
    error = error_from_response(
        _response(
            429,
            {"error": {"code": "queue_full", "message": "queue full", "field": None}},
            **{"Retry-After": "3", "X-Request-Id": "abc"},
        )
    )
    assert isinstance(error, OverloadedError)
    assert (error.message, error.code, error.retry_after, error.request_id) == (
        "queue full",
        "queue_full",
        3.0,
        "abc",
    )


def test_fastapi_validation_body_names_the_field() -> None:
    body = {"detail": [{"loc": ["body", "width"], "msg": "Input should be a multiple of 16"}]}
    error = error_from_response(_response(422, body))
    assert isinstance(error, InvalidArgumentError)
    assert error.field == "width" and "multiple of 16" in error.message


def test_non_json_error_body_keeps_the_text() -> None:
    error = error_from_response(_response(502))
    assert isinstance(error, UnavailableError) and error.message == "plain words"


def test_transport_failures() -> None:
    request = httpx.Request("GET", "http://server/")
    refused = error_from_transport(httpx.ConnectError("refused", request=request), 5)
    slow = error_from_transport(httpx.ReadTimeout("slow", request=request), 5)
    assert isinstance(refused, UnavailableError) and refused.retryable
    assert isinstance(slow, DeadlineExceededError) and not slow.retryable


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0)
    rng = random.Random(0)
    unavailable = UnavailableError("down")
    ceilings = [min(1.0, 0.1 * 2 ** (n - 1)) for n in range(1, 8)]
    for attempt, ceiling in enumerate(ceilings, start=1):
        assert 0 <= policy.delay(attempt, unavailable, rng) <= ceiling
    advised = UnavailableError("draining", retry_after=0.7)
    assert policy.delay(1, advised, rng) >= 0.7
    assert policy.next_delay(10, unavailable, None) is None
    assert policy.next_delay(1, InvalidArgumentError("bad"), None) is None


def test_rest_body_leaves_unset_fields_out() -> None:
    body = params_to_json(GenerationParams(prompt="a cat", seed=3, priority="high"))
    assert body == {"prompt": "a cat", "seed": 3}

"""The REST transport (port 8080): conversions to and from JSON and multipart bodies, and
one asyncio transport that runs any operation (``_operations``) over httpx."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import httpx

from flux_client._common import USER_AGENT, Attempt
from flux_client._operation_types import HttpRequest, Operation
from flux_client.errors import (
    REASON_ERRORS,
    DeadlineExceededError,
    FluxError,
    UnavailableError,
    UnsupportedError,
    error_class,
    parse_retry_after,
)
from flux_client.jobs import JobSubmission
from flux_client.types import (
    EditParams,
    FeedbackResult,
    GeneratedImage,
    GenerationParams,
    GenerationResult,
    ImageFormat,
    Priority,
    Timings,
    VqaParams,
    VqaResult,
)
from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.experiments import ExperimentArm
from flux_contract.presets import StylePreset
from flux_contract.wire import (
    AUTHORIZATION_METADATA,
    PRIORITY_HEADER,
    REQUEST_ID_HEADER,
    REQUEST_TIMEOUT_HEADER,
    RETRY_AFTER_HEADER,
    USER_ID_HEADER,
    reason_for_http_status,
)

Req = TypeVar("Req")
Res = TypeVar("Res")

JSON = "application/json"


def base_url(host: str, port: int, secure: bool) -> str:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{'https' if secure else 'http'}://{bracketed}:{port}"


def params_to_json(params: GenerationParams) -> dict[str, Any]:
    """The ``POST /generate`` body: the article's fields plus ours; unset fields are left
    out so that the style preset's values apply. Priority travels as ``X-Priority``."""
    body = params.model_dump(
        mode="json", exclude_none=True, exclude={"priority", "adapters", "user_id", "headers"}
    )
    if params.adapters:
        body["adapters"] = [a.model_dump() for a in params.adapters]
    return body


def call_headers(params: GenerationParams | None) -> dict[str, str]:
    """What a call's request says besides its body: JSON answers, and its lane."""
    headers = {"Accept": JSON}
    if params is not None:
        headers.update(params.headers)
        if params.user_id is not None:
            headers[USER_ID_HEADER] = params.user_id
        if params.priority is Priority.HIGH:
            headers[PRIORITY_HEADER] = "high"
    return headers


def result_from_json(payload: Mapping[str, Any]) -> GenerationResult:
    images = [
        GeneratedImage(
            data=base64.b64decode(image["b64"]),
            format=ImageFormat.parse(image.get("format") or "png"),
            width=image["width"],
            height=image["height"],
            seed=image["seed"],
        )
        for image in payload.get("images", [])
    ]
    return GenerationResult(
        images=images,
        request_id=payload.get("request_id") or "",
        release=payload.get("release") or "",
        model=payload.get("model") or "",
        batch_size=payload.get("batch_size") or 0,
        timings=Timings.model_validate(payload.get("timings") or {}),
        cache_hit=bool(payload.get("cache_hit")),
        experiment=_experiment_from_json(payload.get("experiment")),
    )


def _experiment_from_json(arm: Any) -> ExperimentArm | None:
    return ExperimentArm.model_validate(arm) if arm else None


def feedback_from_json(payload: Any) -> FeedbackResult:
    return FeedbackResult.model_validate(payload)


def experiments_from_json(payload: Any) -> ExperimentsCounts:
    return ExperimentsCounts.model_validate(payload)


def presets_from_json(payload: Any) -> dict[str, StylePreset]:
    """``GET /v1/presets``: ``{"presets": [{"name": ..., ...}]}`` or ``{"presets": {name:
    {...}}}`` (camelCase or snake_case fields)."""
    presets = payload.get("presets", payload) if isinstance(payload, Mapping) else payload
    if isinstance(presets, Mapping):
        return {name: StylePreset.model_validate(body) for name, body in presets.items()}
    result: dict[str, StylePreset] = {}
    for entry in presets:
        body = dict(entry)
        name = body.pop("name")
        result[name] = StylePreset.model_validate(body)
    return result


def _multipart_fields(params: GenerationParams) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in params_to_json(params).items():
        fields[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return fields


def edit_to_multipart(edit: EditParams) -> tuple[dict[str, str], dict[str, Any]]:
    """``POST /edit`` form fields and files."""
    data = _multipart_fields(edit.params)
    if edit.strength is not None:
        data["strength"] = str(edit.strength)
    if edit.mode is not None:
        data["mode"] = edit.mode.value
    files: dict[str, Any] = {"image": ("image", edit.image, "application/octet-stream")}
    if edit.mask is not None:
        files["mask"] = ("mask", edit.mask, "application/octet-stream")
    return data, files


def vqa_to_multipart(vqa: VqaParams) -> tuple[dict[str, str], dict[str, Any]]:
    """``POST /vqa`` form fields and files."""
    data = {"question": vqa.question, "max_tokens": str(vqa.max_tokens)}
    return data, {"image": ("image", vqa.image, "application/octet-stream")}


def submission_to_json(submission: JobSubmission) -> dict[str, Any]:
    """The body of an async ``POST /generate``: the generation's, and the webhook's."""
    body = params_to_json(submission.params)
    if submission.webhook is not None:
        body["webhook"] = submission.webhook
    if submission.webhook_events_filter:
        body["webhook_events_filter"] = list(submission.webhook_events_filter)
    return body


def error_from_response(response: httpx.Response) -> FluxError:
    """The SDK error for a non-2xx response: the server's ``{"error": {code, message,
    field}}``, FastAPI's ``{"detail": ...}``, or the body's text."""
    message, field, code = response.text.strip() or response.reason_phrase, None, None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        error = payload.get("error")
        detail = payload.get("detail")
        if isinstance(error, Mapping):
            message = str(error.get("message") or message)
            field = error.get("field") or None
            code = str(error["code"]) if error.get("code") is not None else None
        elif isinstance(detail, list) and detail and isinstance(detail[0], Mapping):
            first = detail[0]
            loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
            field = ".".join(loc) or None
            message = str(first.get("msg") or message)
        elif isinstance(detail, str):
            message = detail
    # A code this SDK does not know yet falls back to the reason its status stands for.
    reason = code if code in REASON_ERRORS else reason_for_http_status(response.status_code)
    return error_class(reason, response.status_code)(
        message,
        field=field,
        code=code or reason,
        http_status=response.status_code,
        request_id=response.headers.get(REQUEST_ID_HEADER),
        retry_after=parse_retry_after(response.headers.get(RETRY_AFTER_HEADER)),
    )


def error_from_transport(error: httpx.TransportError, timeout: float | None) -> FluxError:
    """Connection failures are retryable; a read that outlives the timeout is a deadline."""
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return DeadlineExceededError(f"no response within {timeout} s", code="deadline_exceeded")
    return UnavailableError(f"cannot reach the server: {error!r}", code="unavailable")


def _json_payload(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response)
    try:
        return response.json()
    except ValueError:
        raise FluxError(
            f"expected JSON from {response.request.url.path}, got "
            f"{response.headers.get('content-type')!r}",
            http_status=response.status_code,
        ) from None


MAX_SERVER_TIMEOUT_S = 3600.0
"""The longest ``X-Request-Timeout`` the server accepts."""


def call_budget_headers(call: Attempt) -> dict[str, str]:
    """Name the request (``X-Request-Id``) and tell the server the time left
    (``X-Request-Timeout``), so that it gives up too, with a 504, instead of computing
    an image nobody waits for."""
    headers = {REQUEST_ID_HEADER: call.request_id}
    if call.timeout is not None:
        seconds = min(max(call.timeout, 0.001), MAX_SERVER_TIMEOUT_S)
        headers[REQUEST_TIMEOUT_HEADER] = f"{seconds:.3f}"
    return headers


def _client_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if api_key:
        headers[AUTHORIZATION_METADATA] = f"Bearer {api_key}"
    return headers


class AsyncHttpTransport:
    """Runs any operation over one pooled ``httpx.AsyncClient`` (HTTP/1.1)."""

    def __init__(self, url: str, *, api_key: str | None) -> None:
        self._client = httpx.AsyncClient(base_url=url, headers=_client_headers(api_key))

    async def _send(self, request: HttpRequest, call: Attempt) -> Any:
        headers = {**request.headers, **call_budget_headers(call)}
        try:
            response = await self._client.request(
                request.method,
                request.path,
                json=request.json,
                data=request.data,
                files=request.files,
                headers=headers,
                timeout=call.timeout,
            )
        except httpx.TransportError as error:
            raise error_from_transport(error, call.timeout) from None
        return _json_payload(response)

    async def unary(self, op: Operation[Req, Res], request: Req, call: Attempt) -> Res:
        if op.to_http is None or op.from_json is None:
            raise UnsupportedError(op.unsupported_over_http, code="unsupported")
        http = op.to_http(request)
        if http.raw:
            return op.from_json(await self._send_raw(http, call))
        return op.from_json(await self._send(http, call))

    async def _send_raw(self, request: HttpRequest, call: Attempt) -> bytes:
        """The body's bytes of a ``GET`` (a job's image)."""
        headers = {**request.headers, **call_budget_headers(call)}
        try:
            response = await self._client.get(request.path, headers=headers, timeout=call.timeout)
        except httpx.TransportError as error:
            raise error_from_transport(error, call.timeout) from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.content

    async def stream(
        self, op: Operation[Req, Res], request: Req, call: Attempt
    ) -> AsyncIterator[Res]:
        """A Server-Sent Events stream: one ``from_json`` result per event's data."""
        if op.to_http is None or op.from_json is None:
            raise UnsupportedError(op.unsupported_over_http, code="unsupported")
        http = op.to_http(request)
        headers = {**http.headers, "Accept": "text/event-stream", **call_budget_headers(call)}
        try:
            async with self._client.stream(
                http.method, http.path, headers=headers, timeout=call.timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:  # a blank line ends an event
                        yield op.from_json(json.loads("\n".join(data)))
                        data = []
        except httpx.TransportError as error:
            raise error_from_transport(error, call.timeout) from None

    async def ready(self, timeout: float | None) -> bool:
        """Whether ``GET /readyz`` answers 200 (model loaded, warmed)."""
        try:
            response = await self._client.get("/readyz", timeout=timeout)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def close(self) -> None:
        await self._client.aclose()


def vqa_from_json(payload: Any) -> VqaResult:
    if not isinstance(payload, Mapping) or "answer" not in payload:
        raise FluxError(f"unexpected VQA response: {payload!r:.200}")
    return VqaResult(
        answer=str(payload["answer"]),
        request_id=payload.get("request_id") or "",
        model=payload.get("model") or "",
    )

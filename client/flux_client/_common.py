"""What every call shares: settings, the checking of the address and transport, and the
building of typed requests from keyword arguments."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TypedDict, cast

from pydantic import ValidationError

from flux_client._images import ImageArg, image_bytes
from flux_client._retry import RetryPolicy
from flux_client.errors import FluxError, InvalidArgumentError
from flux_client.types import (
    AdaptersArg,
    EditMode,
    EditParams,
    GenerationParams,
    ImageFormat,
    Priority,
    VqaParams,
    adapters_from_arg,
)

log = logging.getLogger("flux_client")

DEFAULT_TIMEOUT = 300.0


def _sdk_version() -> str:
    try:
        return version("fluxserve")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


USER_AGENT = f"fluxserve-client/{_sdk_version()}"
"""Sent as the HTTP User-Agent and the gRPC primary user agent, so server logs can tell
SDK versions apart."""


class GenerationOptions(TypedDict, total=False):
    """Keyword arguments every generating call accepts; unset means the style preset's
    value, then the server's default."""

    negative_prompt: str | None
    width: int | None
    height: int | None
    steps: int | None
    guidance_scale: float | None
    true_cfg_scale: float | None
    style_preset: str | None
    seed: int | None
    num_images: int | None
    output_format: ImageFormat | str | None
    priority: Priority | str
    adapters: AdaptersArg
    user_id: str | None
    headers: dict[str, str] | None
    previews: bool | None


def options_among(arguments: Mapping[str, object]) -> GenerationOptions:
    """The generation options among a call's arguments (``generate`` passes its
    ``locals()``), so their names are listed once, in ``GenerationOptions``."""
    names = GenerationOptions.__annotations__
    return cast(GenerationOptions, {k: v for k, v in arguments.items() if k in names})


def check_address(host: str, port: int) -> None:
    """Refuse what would otherwise fail later and less clearly: a URL as the host, a
    port out of range."""
    if "://" in host or "/" in host:
        raise ValueError(
            f"host must be a host name or address, not {host!r}: "
            "FluxModelClient(host='flux.example.com', port=8080)"
        )
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, not {port}")


def check_transport(transport: str) -> str:
    """``transport`` when it is one the SDK speaks (``auto``, ``grpc``, ``http``)."""
    if transport not in ("auto", "grpc", "http"):
        raise ValueError(f"transport must be 'auto', 'grpc' or 'http', not {transport!r}")
    return transport


@dataclass(frozen=True)
class ClientSettings:
    """Where and how a client talks to the server."""

    host: str
    port: int
    transport: str
    """``grpc``, ``http`` or ``auto`` (the client asks the port on first use)."""
    api_key: str | None = field(default=None, repr=False)
    timeout: float | None = DEFAULT_TIMEOUT
    """Seconds for a whole call, retries included; ``None`` waits forever."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    secure: bool = False
    """TLS (https / a secure channel with the system's roots)."""

    @property
    def grpc_target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Attempt:
    """One attempt of a call, as a transport sends it."""

    timeout: float | None
    """Seconds left of the call's budget."""
    request_id: str
    """Sent as ``x-request-id``; the server logs and answers with it. The same for every
    retry of one call, so the server's logs show them as one request."""


def _invalid(error: ValidationError) -> InvalidArgumentError:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or None
    return InvalidArgumentError(f"{where}: {first['msg']}", field=where, code="invalid_argument")


def build_generation(prompt: str, options: GenerationOptions) -> GenerationParams:
    """Typed parameters from keyword arguments; a wrong type names the field."""
    values = dict(options)
    adapters = adapters_from_arg(values.pop("adapters", None))  # type: ignore[arg-type]
    for optional in ("priority", "headers"):
        if values.get(optional) is None:
            values.pop(optional, None)
    try:
        return GenerationParams(prompt=prompt, adapters=adapters, **values)  # type: ignore[arg-type]
    except ValidationError as error:
        raise _invalid(error) from None
    except ValueError as error:  # e.g. an unknown output_format
        raise InvalidArgumentError(str(error), code="invalid_argument") from None


def with_format_from_path(options: GenerationOptions, output_path: str | Path | None) -> None:
    """Ask for the format the output file's suffix names, unless one was given."""
    if output_path is not None and options.get("output_format") is None:
        fmt = ImageFormat.from_path(output_path)
        if fmt is not None:
            options["output_format"] = fmt


def build_edit(
    image: ImageArg,
    prompt: str,
    mask: ImageArg | None,
    strength: float | None,
    mode: EditMode | str | None,
    options: GenerationOptions,
) -> EditParams:
    params = build_generation(prompt, options)
    try:
        return EditParams(
            image=image_bytes(image, "image"),
            mask=image_bytes(mask, "mask") if mask is not None else None,
            strength=strength,
            mode=mode,  # type: ignore[arg-type]
            params=params,
        )
    except ValidationError as error:
        raise _invalid(error) from None


def build_vqa(image: ImageArg, question: str, max_tokens: int) -> VqaParams:
    try:
        return VqaParams(
            image=image_bytes(image, "image"), question=question, max_tokens=max_tokens
        )
    except ValidationError as error:
        raise _invalid(error) from None


def new_request_id() -> str:
    return uuid.uuid4().hex


def log_retry(error: FluxError, request_id: str, attempt: int, wait: float) -> None:
    log.warning(
        "retrying after a transient failure",
        extra={
            "request_id": request_id,
            "attempt": attempt,
            "wait_s": round(wait, 3),
            "error": str(error),
        },
    )


def with_request_id(error: FluxError, request_id: str) -> FluxError:
    """The error, naming the call's request id when the server did not."""
    if error.request_id is None:
        error.request_id = request_id
    return error

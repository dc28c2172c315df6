"""What every gRPC call of ``fluxserve.v1.FluxService`` passes before its handler: the
key, then the message's decoding.

grpc.aio decodes a request message before it calls the handler, so a servicer method
cannot refuse a caller without a key before paying for the protobuf decode. This
interceptor swaps each method's handler for one that receives the raw bytes (the core
has already bounded them: ``grpc.max_receive_message_length`` is ``--max-body-bytes``,
and a larger message ends with RESOURCE_EXHAUSTED before it reaches Python), checks the
key from the metadata, and only then decodes — so an unauthenticated caller costs one
bounded buffer and no protobuf object, and bytes that are not a message answer
INVALID_ARGUMENT (``malformed_request``), not UNKNOWN.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from flux_contract.wire import (
    SERVICE_NAME,
)
from flux_server.api.grpc.calls import Calls, call_context, metadata_value
from flux_server.errors import MalformedRequest, ServeError, Unauthenticated, status_of
from flux_server.memory import Trimmer
from flux_server.service.core import GenerationService

log = logging.getLogger(__name__)

Admit = Callable[[bytes, grpc.aio.ServicerContext], tuple[Any, ServeError | None]]
"""Raw bytes to the decoded request, or the error the caller is refused with."""
Refuse = Callable[[grpc.aio.ServicerContext, ServeError], Awaitable[None]]

OPEN_METHODS = frozenset({"ListPresets"})
"""Methods that do no work for the caller and need no key (REST's ``/presets`` is open
too)."""


def _peer_host(peer: str | None) -> str | None:
    """The host of a gRPC peer (``ipv4:10.0.0.7:53214``, ``ipv6:[::1]:53214``)."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


TRUSTED_PROXIES = frozenset({"127.0.0.1", "::1"})
"""Peers whose ``x-forwarded-for`` is believed (a sidecar proxy), as uvicorn's
``--forwarded-allow-ips`` default for REST."""


def _client(details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext) -> str | None:
    """The caller's address: the peer, or behind a local proxy (a mesh sidecar) the
    right-most address of ``x-forwarded-for`` that is not itself a proxy. What
    failed-key throttling counts by: a sidecar's own address would lump every caller
    together."""
    peer = _peer_host(context.peer())
    forwarded = metadata_value(details.invocation_metadata, "x-forwarded-for")
    if peer not in TRUSTED_PROXIES or not forwarded:
        return peer
    for hop in reversed([part.strip() for part in forwarded.split(",")]):
        if hop and hop not in TRUSTED_PROXIES:
            return hop
    return peer


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Key before decode, and a clean error for bytes that do not decode."""

    def __init__(self, service: GenerationService) -> None:
        self.service = service
        self.calls = Calls(service)
        self.trimmer = Trimmer()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        service_name, _, method = full_method.lstrip("/").rpartition("/")
        if handler is None or service_name != SERVICE_NAME or handler.request_streaming:
            return handler
        admit = self._admitter(handler_call_details, method, handler.request_deserializer)

        async def refuse(context: grpc.aio.ServicerContext, error: ServeError) -> None:
            await self._abort(context, handler_call_details, method, error)

        if handler.unary_stream is not None:
            return _streaming(handler, admit, refuse)
        return _single(handler, admit, refuse)

    def _admitter(
        self,
        details: grpc.HandlerCallDetails,
        method: str,
        decode: Callable[[bytes], Any] | None,
    ) -> Admit:
        needs_key = method not in OPEN_METHODS

        def admit(raw: bytes, context: grpc.aio.ServicerContext) -> tuple[Any, ServeError | None]:
            """The decoded request, or the caller's error. Synchronous, so no frame that
            outlives it holds ``raw``."""
            # The buffer is the caller's until the call ends; then its memory goes back.
            # The callback holds the size only: a closure over ``raw`` would keep it.
            size = len(raw)
            context.add_done_callback(lambda _call: self.trimmer.after(size))
            peer = _client(details, context)
            if needs_key and (error := self._refusal(details, peer)) is not None:
                return None, error
            try:
                return (decode(raw) if decode is not None else raw), None
            except (DecodeError, ValueError, TypeError) as exc:
                return None, MalformedRequest(f"the request is not a {method} message: {exc}")

        return admit

    def _refusal(self, details: grpc.HandlerCallDetails, peer: str | None) -> ServeError | None:
        """The key's error (None when it is valid or the server is open)."""
        try:
            self.service.authenticate(call_context(details.invocation_metadata, "", client=peer))
        except ServeError as error:
            # Without its traceback: its frames reach back (f_back) to the caller's, which
            # holds the message's bytes, and the error outlives the call in a cycle that
            # only a full collection frees (seen: +900 MiB after 20 bursts of 10 x 15 MiB).
            return error.with_traceback(None)
        return None

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        details: grpc.HandlerCallDetails,
        method: str,
        error: ServeError,
    ) -> None:
        """End the call as the servicer would: audited, counted, the rich status."""
        ctx = call_context(details.invocation_metadata, method, client=_client(details, context))
        self.service.metrics.requests.labels(
            endpoint=ctx.endpoint, code=status_of(error).grpc
        ).inc()
        if isinstance(error, Unauthenticated):
            log.info("unauthenticated call refused", extra={"request_id": ctx.request_id})
        await self.calls.abort(context, ctx, error)


def _streaming(
    handler: grpc.RpcMethodHandler, admit: Admit, refuse: Refuse
) -> grpc.RpcMethodHandler:
    """A server-streaming method that takes the raw bytes and admits them first."""
    stream = handler.unary_stream

    async def streaming(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request, error = admit(raw, context)
        # The abort's traceback keeps this frame (a cycle, freed only by a full
        # collection): it must not keep the message's bytes with it.
        del raw
        if error is not None:
            await refuse(context, error)
        async for event in stream(request, context):
            yield event

    return grpc.unary_stream_rpc_method_handler(
        streaming, response_serializer=handler.response_serializer
    )


def _single(handler: grpc.RpcMethodHandler, admit: Admit, refuse: Refuse) -> grpc.RpcMethodHandler:
    """A unary method that takes the raw bytes and admits them first."""
    unary = handler.unary_unary

    async def single(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        request, error = admit(raw, context)
        del raw  # as in _streaming
        if error is not None:
            await refuse(context, error)
        return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        single, response_serializer=handler.response_serializer
    )

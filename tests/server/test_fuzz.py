"""Schema-driven fuzzing of the REST API (schemathesis) against a real server: for
generated requests, valid and not, every answer is documented in /openapi.json (status,
content type, body schema) and none is a server error (a 5xx other than a deadline the
caller set passing). Bounded: a few examples per operation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from server_process import ServerProcess  # noqa: E402

#: The only 5xx answers a request may get, each documented and the caller's to act on: a
#: deadline it chose that passed (X-Request-Timeout: 5e-324), a server not ready yet, a
#: feature this server was started without (a webhook without --webhook-secret).
CALLER_5XX = {504: "deadline_exceeded", 503: "unavailable", 501: "unimplemented"}
#: Examples per operation: enough to cross every field's boundaries, within ~1-2 minutes.
EXAMPLES = 25
CHECKS = (
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def fuzzed_server(server_factory: Any, tiny_model_dir: Path, tiny_vqa_dir: Path) -> ServerProcess:
    # Small limits keep every valid request cheap on a CPU; the rest is refused.
    args = ["--vqa-model", str(tiny_vqa_dir), "--enable-editing", "--max-side", "128"]
    args += ["--max-steps", "2", "--max-images", "1", "--max-image-pixels", str(256 * 256)]
    server: ServerProcess = server_factory(tiny_model_dir, args)
    return server


def test_rest_answers_are_documented_and_never_5xx(fuzzed_server: ServerProcess) -> None:
    api = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {"/generate", "/edit", "/vqa"} <= {op.path for op in operations}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: Any) -> None:
            response = case.call(base_url=fuzzed_server.url, timeout=60)
            if response.status_code >= 500:
                code = response.json()["error"]["code"]
                assert CALLER_5XX.get(response.status_code) == code, case.as_curl_command()
            case.validate_response(response, checks=CHECKS)

        answers_as_documented()


# -- gRPC: every method, random and boundary messages --------------------------------------

_BAD_CODES = {"INTERNAL", "UNKNOWN", "DATA_LOSS"}


def _boundary_messages(message_class: Any) -> list[bytes]:
    """Messages with every field at an edge: the empty message, then each kind of
    extreme in every scalar field at once (nested messages too)."""
    import math

    from google.protobuf.descriptor import FieldDescriptor as F

    int_edges = {
        F.TYPE_INT32: (-(2**31), 2**31 - 1),
        F.TYPE_SINT32: (-(2**31), 2**31 - 1),
        F.TYPE_UINT32: (0, 2**32 - 1),
        F.TYPE_INT64: (-(2**63), 2**63 - 1),
        F.TYPE_SINT64: (-(2**63), 2**63 - 1),
        F.TYPE_UINT64: (0, 2**64 - 1),
    }

    def fill(message: Any, pick: int) -> None:
        for field in message.DESCRIPTOR.fields:
            repeated = field.is_repeated
            if field.type == F.TYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry:
                    continue
                child = getattr(message, field.name).add() if repeated else None
                fill(child if child is not None else getattr(message, field.name), pick)
                if not repeated:
                    getattr(message, field.name).SetInParent()
                continue
            if field.type in int_edges:
                value: Any = int_edges[field.type][pick % 2]
            elif field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                value = (math.nan, math.inf, -math.inf, -1e30)[pick % 4]
            elif field.type == F.TYPE_BOOL:
                value = bool(pick % 2)
            elif field.type == F.TYPE_ENUM:
                value = (99, -1, 0)[pick % 3]
            elif field.type == F.TYPE_STRING:
                value = ("", "x" * 100_000, "\u202e\u0000\U0001f600" * 50)[pick % 3]
            elif field.type == F.TYPE_BYTES:
                value = (b"", os.urandom(5000), b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)[pick % 3]
            else:
                continue
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)

    messages = [message_class().SerializeToString()]
    for pick in range(6):
        message = message_class()
        fill(message, pick)
        messages.append(message.SerializeToString())
    return messages


def test_grpc_methods_never_fail_inside(fuzzed_server: ServerProcess) -> None:
    """Every FluxService method gets random bytes and boundary messages: each answer is
    a response of the method's type or a status the wire contract names, never INTERNAL
    or UNKNOWN."""
    import random

    import grpc
    from google.protobuf import message_factory

    from flux_client.wire import SERVICE_NAME, pb

    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME.rsplit(".", 1)[-1]]
    rng = random.Random(13)
    seen: dict[str, set[str]] = {}
    with grpc.insecure_channel(fuzzed_server.grpc_target) as channel:
        for method in service.methods:
            if method.client_streaming:
                continue
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            path = f"/{service.full_name}/{method.name}"
            payloads = _boundary_messages(request_class)
            payloads += [rng.randbytes(rng.randint(1, 2000)) for _ in range(10)]
            for payload in payloads:
                try:
                    if method.server_streaming:
                        stream = channel.unary_stream(
                            path, response_deserializer=response_class.FromString
                        )
                        list(stream(payload, timeout=60))
                    else:
                        call = channel.unary_unary(
                            path, response_deserializer=response_class.FromString
                        )
                        call(payload, timeout=60)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                    assert code not in _BAD_CODES, (method.name, payload[:80], error.details())
                seen.setdefault(method.name, set()).add(code)
    assert {"Generate", "GenerateStream", "Edit", "VQA", "ListPresets"} <= seen.keys()
    assert "INVALID_ARGUMENT" in seen["Generate"]

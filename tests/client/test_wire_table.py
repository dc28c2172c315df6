"""The wire contract's one table: every reason of the proto has an HTTP status, a gRPC
code and an SDK class, and every server error names a reason of it."""

from __future__ import annotations

import grpc
import pytest

from flux_client.errors import REASON_ERRORS
from flux_client.types import ImageFormat
from flux_client.wire import (
    IMAGE_FORMAT_FROM_PB,
    IMAGE_FORMAT_TO_PB,
    REASONS,
    WireError,
    from_grpc_status,
    pb,
    reason_name,
    to_grpc_status,
)


def _proto_reasons() -> set[str]:
    return {reason_name(v) for v in pb.ErrorReason.values() if v != pb.ERROR_REASON_UNSPECIFIED}


def test_every_proto_reason_is_in_the_table_and_has_an_sdk_class() -> None:
    assert set(REASONS) == _proto_reasons()
    assert set(REASON_ERRORS) == _proto_reasons()
    for status in REASONS.values():
        assert isinstance(status.grpc_code, grpc.StatusCode)
        assert 400 <= status.http < 600


def test_every_server_error_names_a_reason() -> None:
    errors = pytest.importorskip("flux_server.errors")

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    # Every subclass imported so far, whatever its constructor takes: the status follows
    # the class's code alone.
    for cls in subclasses(errors.ServeError):
        assert cls.code in REASONS, cls
        assert errors.status_of(cls.__new__(cls)) == REASONS[cls.code]


def test_rich_status_round_trip() -> None:
    sent = WireError("content_rejected", "blocked", "prompt", 3.0, "rid-1")
    status = to_grpc_status(sent)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert from_grpc_status(status.code, status.details, status.trailing_metadata) == sent


def test_a_status_without_details_falls_back_to_its_code() -> None:
    got = from_grpc_status(grpc.StatusCode.UNAVAILABLE, "connect failed", ())
    assert (got.reason, got.message, got.field) == ("unavailable", "connect failed", None)


def test_image_format_tables_cover_the_proto_and_the_sdk() -> None:
    assert set(IMAGE_FORMAT_FROM_PB) == set(pb.ImageFormat.values())
    assert IMAGE_FORMAT_FROM_PB[pb.IMAGE_FORMAT_UNSPECIFIED] == "png"
    assert {IMAGE_FORMAT_FROM_PB[value]: value for value in IMAGE_FORMAT_TO_PB.values()} == (
        IMAGE_FORMAT_TO_PB
    )
    assert set(IMAGE_FORMAT_TO_PB) == {member.value for member in ImageFormat}

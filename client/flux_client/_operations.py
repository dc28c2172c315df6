"""Each call of the fluxserve API, written once: how it travels over gRPC (the stub method,
the request message, the reading of the answer) and over REST (method, path, body, the
reading of the JSON). The transports run any operation the same way, so a new call is one
``Operation`` here and one method on ``AsyncFluxModelClient``."""

from __future__ import annotations

from collections.abc import Callable

from flux_client import _grpc as proto
from flux_client import _http as rest
from flux_client._operation_types import HttpRequest, Operation
from flux_client.jobs import JobEvent, JobInfo, JobSubmission
from flux_client.types import (
    EditParams,
    FeedbackParams,
    FeedbackResult,
    GenerationParams,
    GenerationResult,
    StreamEvent,
    VqaParams,
    VqaResult,
)
from flux_contract.experiment_counts import ExperimentsCounts
from flux_contract.presets import StylePreset
from flux_contract.wire import pb


def _generate_http(params: GenerationParams) -> HttpRequest:
    return HttpRequest(
        "POST", "/generate", json=rest.params_to_json(params), headers=rest.call_headers(params)
    )


def _edit_http(edit: EditParams) -> HttpRequest:
    data, files = rest.edit_to_multipart(edit)
    return HttpRequest(
        "POST", "/edit", data=data, files=files, headers=rest.call_headers(edit.params)
    )


def _vqa_http(vqa: VqaParams) -> HttpRequest:
    data, files = rest.vqa_to_multipart(vqa)
    return HttpRequest("POST", "/vqa", data=data, files=files, headers=rest.call_headers(None))


def _presets_http(_: None) -> HttpRequest:
    return HttpRequest("GET", "/v1/presets", headers=rest.call_headers(None))


GENERATE: Operation[GenerationParams, GenerationResult] = Operation(
    name="generate",
    grpc_method="Generate",
    to_proto=lambda params: pb.GenerateRequest(params=proto.params_to_proto(params)),
    from_proto=proto.result_from_proto,
    to_http=_generate_http,
    from_json=rest.result_from_json,
    metadata=proto.params_metadata,
)

GENERATE_STREAM: Operation[GenerationParams, StreamEvent] = Operation(
    name="stream",
    grpc_method="GenerateStream",
    to_proto=lambda params: pb.GenerateRequest(params=proto.params_to_proto(params)),
    from_proto=proto.event_from_proto,
    to_http=None,
    from_json=None,
    streaming=True,
    unsupported_over_http="progress streaming needs gRPC: use transport='grpc' (port 50051)",
    metadata=proto.params_metadata,
)

EDIT: Operation[EditParams, GenerationResult] = Operation(
    name="edit",
    grpc_method="Edit",
    to_proto=proto.edit_to_proto,
    from_proto=proto.result_from_proto,
    to_http=_edit_http,
    from_json=rest.result_from_json,
    metadata=lambda edit: proto.params_metadata(edit.params),
)

VQA: Operation[VqaParams, VqaResult] = Operation(
    name="vqa",
    grpc_method="VQA",
    to_proto=proto.vqa_to_proto,
    from_proto=proto.vqa_from_proto,
    to_http=_vqa_http,
    from_json=rest.vqa_from_json,
)

LIST_PRESETS: Operation[None, dict[str, StylePreset]] = Operation(
    name="list_presets",
    grpc_method="ListPresets",
    to_proto=lambda _: pb.ListPresetsRequest(),
    from_proto=proto.presets_from_proto,
    to_http=_presets_http,
    from_json=rest.presets_from_json,
)


# --- async jobs -----------------------------------------------------------------------------


def _submit_http(submission: JobSubmission) -> HttpRequest:
    headers = {**rest.call_headers(submission.params), "Prefer": "respond-async"}
    return HttpRequest(
        "POST", "/generate", json=rest.submission_to_json(submission), headers=headers
    )


def _job_http(path: str, method: str = "GET") -> Callable[[str], HttpRequest]:
    def request(job_id: str) -> HttpRequest:
        return HttpRequest(method, f"/jobs/{job_id}{path}", headers=rest.call_headers(None))

    return request


SUBMIT: Operation[JobSubmission, JobInfo] = Operation(
    name="submit",
    grpc_method="Submit",
    to_proto=proto.submission_to_proto,
    from_proto=proto.job_from_proto,
    to_http=_submit_http,
    from_json=JobInfo.from_json,
    metadata=lambda submission: proto.params_metadata(submission.params),
)

GET_JOB: Operation[str, JobInfo] = Operation(
    name="get_job",
    grpc_method="GetJob",
    to_proto=lambda job_id: pb.JobRequest(id=job_id),
    from_proto=proto.job_from_proto,
    to_http=_job_http(""),
    from_json=JobInfo.from_json,
)

CANCEL_JOB: Operation[str, JobInfo] = Operation(
    name="cancel_job",
    grpc_method="CancelJob",
    to_proto=lambda job_id: pb.JobRequest(id=job_id),
    from_proto=proto.job_from_proto,
    to_http=_job_http("/cancel", "POST"),
    from_json=JobInfo.from_json,
)

WATCH_JOB: Operation[str, JobEvent] = Operation(
    name="watch_job",
    grpc_method="WatchJob",
    to_proto=lambda job_id: pb.JobRequest(id=job_id),
    from_proto=proto.job_event_from_proto,
    to_http=_job_http("/events"),
    from_json=JobEvent.from_json,
    streaming=True,
)


def job_image(index: int) -> Operation[str, bytes]:
    """Image ``index`` of a succeeded job (over gRPC, ``GetJob`` carries the bytes)."""

    def to_http(job_id: str) -> HttpRequest:
        return HttpRequest("GET", f"/jobs/{job_id}/images/{index}", raw=True)

    return Operation(
        name="job_image",
        grpc_method="GetJob",
        to_proto=lambda job_id: pb.JobRequest(id=job_id),
        from_proto=lambda message: bytes(message.images[index].data),
        to_http=to_http,
        from_json=bytes,
    )


FEEDBACK: Operation[FeedbackParams, FeedbackResult] = Operation(
    name="feedback",
    grpc_method="Feedback",
    to_proto=proto.feedback_to_proto,
    from_proto=proto.feedback_from_proto,
    to_http=lambda feedback: HttpRequest(
        "POST", "/feedback", json=feedback.model_dump(), headers=rest.call_headers(None)
    ),
    from_json=rest.feedback_from_json,
)

LIST_EXPERIMENTS: Operation[None, ExperimentsCounts] = Operation(
    name="list_experiments",
    grpc_method="ListExperiments",
    to_proto=lambda _: pb.ListExperimentsRequest(),
    from_proto=proto.experiments_from_proto,
    to_http=lambda _: HttpRequest("GET", "/experiments", headers=rest.call_headers(None)),
    from_json=rest.experiments_from_json,
)

"""flux_client: the Python SDK for fluxserve (gRPC and REST), and the wire types.

>>> from flux_client import FluxModelClient
>>> client = FluxModelClient(host="localhost", port=8080)
>>> client.generate(prompt="a futuristic city at sunset", output_path="city.png")
"""

from flux_client._retry import RetryPolicy
from flux_client.aio import AsyncFluxModelClient
from flux_client.client import FluxModelClient
from flux_client.errors import (
    AuthenticationError,
    AuthError,
    ContentRejectedError,
    DeadlineExceededError,
    FluxError,
    InvalidArgumentError,
    NotEnabledError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ServerError,
    UnavailableError,
    UnsupportedError,
)
from flux_client.job_handles import AsyncJob, Job, JobCanceledError
from flux_client.jobs import JobEvent, JobInfo, JobStatus
from flux_client.types import (
    Adapter,
    EditMode,
    FeedbackResult,
    GeneratedImage,
    GenerationResult,
    ImageFormat,
    Preview,
    Priority,
    Progress,
    Timings,
    VqaResult,
)
from flux_contract.experiments import ExperimentArm
from flux_contract.presets import PresetLora, StylePreset

__all__ = [
    "Adapter",
    "AsyncFluxModelClient",
    "AsyncJob",
    "AuthError",
    "AuthenticationError",
    "ContentRejectedError",
    "DeadlineExceededError",
    "EditMode",
    "ExperimentArm",
    "FeedbackResult",
    "FluxError",
    "FluxModelClient",
    "GeneratedImage",
    "GenerationResult",
    "ImageFormat",
    "InvalidArgumentError",
    "Job",
    "JobCanceledError",
    "JobEvent",
    "JobInfo",
    "JobStatus",
    "NotEnabledError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "PresetLora",
    "Preview",
    "Priority",
    "Progress",
    "RetryPolicy",
    "ServerError",
    "StylePreset",
    "Timings",
    "UnavailableError",
    "UnsupportedError",
    "VqaResult",
]

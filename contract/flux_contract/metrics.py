"""The Prometheus metrics of a fluxserve server: names, kinds and label names, spelled once.

The server registers them; the operator's canary analysis and HPA, the SDK's experiments
report, the alert rules and the dashboard query them. Each ``Metric`` gives the name the
server registers (``prometheus_client`` takes a counter's name without ``_total``) and the
series a scrape shows: ``REQUESTS.total`` is ``fluxserve_requests_total``,
``REQUEST_DURATION.bucket`` is ``fluxserve_request_duration_seconds_bucket``. A test
checks that every metric the server registers is here, with its kind and labels, and that
every ``fluxserve_*`` name the files under deploy/ and charts/ query is a series of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALL",
    "ARM",
    "AUDIT_FREE_BYTES",
    "AUDIT_WRITE_FAILURES",
    "BATCH_SIZE",
    "CACHE_ERRORS",
    "CACHE_HITS",
    "CACHE_MISSES",
    "CODE",
    "ENDPOINT",
    "EVENT",
    "EXPERIMENT",
    "EXPERIMENT_ARM_INFO",
    "EXPERIMENT_FEEDBACK",
    "EXPERIMENT_GPU_SECONDS",
    "EXPERIMENT_IMAGES",
    "EXPERIMENT_METRICS",
    "EXPERIMENT_PREFIX",
    "EXPERIMENT_REQUESTS",
    "EXPERIMENT_REQUEST_DURATION",
    "FLUXDEPLOYMENT",
    "GPU_MEMORY_USED",
    "GPU_UTILIZATION",
    "IMAGES_GENERATED",
    "INFERENCE_DURATION",
    "JOBS",
    "JOB_STATUSES",
    "LE",
    "MODEL",
    "MODEL_INFO",
    "MODEL_LOAD_SECONDS",
    "NAMESPACE",
    "OUTCOME",
    "PHASE",
    "POD",
    "POD_LABELS",
    "POSITION",
    "PREFIX",
    "PRESET",
    "PRIORITY",
    "QUEUE_DEPTH",
    "QUEUE_DEPTH_BY_PRIORITY",
    "READY",
    "REASON",
    "RECOMPILES",
    "RELEASE",
    "REQUESTS",
    "REQUESTS_RUNNING",
    "REQUEST_DURATION",
    "REVISION",
    "SAFETY_REJECTIONS",
    "SERVER_ERROR_CODES",
    "STARTUP_PHASES",
    "STARTUP_SECONDS",
    "STATUS",
    "TRACK",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_OUTCOMES",
    "WEIGHT",
    "Metric",
    "MetricKind",
    "series_names",
]

PREFIX = "fluxserve_"
EXPERIMENT_PREFIX = "fluxserve_experiment_"
"""Every per-arm metric of style-preset experiments starts with this."""

MetricKind = Literal["counter", "gauge", "histogram"]

# Label names the server sets.
ENDPOINT = "endpoint"
"""``rest:/generate`` style for REST, the RPC name (``Generate``) for gRPC."""
CODE = "code"
"""The HTTP status (``200``) over REST, the gRPC code name (``OK``) over gRPC."""
REASON = "reason"
MODEL = "model"
REVISION = "revision"
RELEASE = "release"
STATUS = "status"
OUTCOME = "outcome"
EXPERIMENT = "experiment"
ARM = "arm"
EVENT = "event"
PRESET = "preset"
POSITION = "position"
PRIORITY = "priority"
PHASE = "phase"
WEIGHT = "weight"
LE = "le"
"""A histogram bucket's upper bound (Prometheus' own label)."""

# Labels the scrape adds: the PodMonitor in deploy/monitoring copies them from the pod.
NAMESPACE = "namespace"
POD = "pod"
TRACK = "track"
"""``stable`` or ``canary`` (the pod label ``fluxserve.dev/track``)."""
FLUXDEPLOYMENT = "fluxdeployment"
"""The FluxDeployment a pod serves (the pod label ``fluxserve.dev/fluxdeployment``)."""
POD_LABELS = (NAMESPACE, POD, RELEASE, TRACK, FLUXDEPLOYMENT)
"""On every series once scraped; ``release`` is the pod's ``app.kubernetes.io/version``."""

SERVER_ERROR_CODES = "5..|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|UNIMPLEMENTED|UNKNOWN|DATA_LOSS"
"""A regular expression for the ``code`` values that are the server's fault: a 5xx over
REST and the gRPC codes of the reasons whose HTTP status is a 5xx (plus UNKNOWN and
DATA_LOSS). A refusal of the caller's request does not match."""

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
"""The ``status`` values of ``fluxserve_jobs``: every one has a series from the start."""
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed", "refused", "dropped")
"""The ``outcome`` values of ``fluxserve_webhook_deliveries_total``."""

_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


@dataclass(frozen=True)
class Metric:
    """One metric: the name it is registered under, its kind, its labels in the order the
    server passes them, and its help text."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names a scrape shows (``_created`` aside)."""
        return tuple(self.name + suffix for suffix in _SUFFIXES[self.kind])

    @property
    def total(self) -> str:
        """A counter's series: ``<name>_total``."""
        if self.kind != "counter":
            raise ValueError(f"{self.name} is a {self.kind}, not a counter")
        return self.name + "_total"

    @property
    def bucket(self) -> str:
        """A histogram's bucket series: ``<name>_bucket`` (labelled ``le``)."""
        if self.kind != "histogram":
            raise ValueError(f"{self.name} is a {self.kind}, not a histogram")
        return self.name + "_bucket"


REQUESTS = Metric(
    "fluxserve_requests",
    "counter",
    "Requests answered, by endpoint and status code.",
    (ENDPOINT, CODE),
)
REQUEST_DURATION = Metric(
    "fluxserve_request_duration_seconds", "histogram", "Time from arrival to answer.", (ENDPOINT,)
)
QUEUE_DEPTH = Metric("fluxserve_queue_depth", "gauge", "Requests waiting for a batch slot.")
"""What the HorizontalPodAutoscaler scales on (through prometheus-adapter). With
``--queue`` it is the fleet's total, read from the streams: every front reports it."""
QUEUE_DEPTH_BY_PRIORITY = Metric(
    "fluxserve_queue_depth_by_priority",
    "gauge",
    "Requests waiting, by priority (high, normal): the fleet's streams with --queue.",
    (PRIORITY,),
)
REQUESTS_RUNNING = Metric(
    "fluxserve_requests_running", "gauge", "Requests in the pipeline call running now."
)
BATCH_SIZE = Metric("fluxserve_batch_size", "histogram", "Requests per pipeline call.")
INFERENCE_DURATION = Metric(
    "fluxserve_inference_duration_seconds", "histogram", "Duration of one pipeline call."
)
IMAGES_GENERATED = Metric("fluxserve_images_generated", "counter", "Images the pipeline produced.")
CACHE_HITS = Metric("fluxserve_cache_hits", "counter", "Requests answered from the result cache.")
CACHE_MISSES = Metric("fluxserve_cache_misses", "counter", "Cacheable requests not in the cache.")
CACHE_ERRORS = Metric(
    "fluxserve_cache_errors", "counter", "Result cache failures (served as misses)."
)
SAFETY_REJECTIONS = Metric(
    "fluxserve_safety_rejections",
    "counter",
    "Prompts the safety filter refused, by reason.",
    (REASON,),
)
GPU_MEMORY_USED = Metric(
    "fluxserve_gpu_memory_used_bytes",
    "gauge",
    "GPU memory in use on this pod's GPU (NVML; torch's allocation without it).",
)
GPU_UTILIZATION = Metric(
    "fluxserve_gpu_utilization_ratio",
    "gauge",
    "GPU busy fraction (0-1) over the driver's last sample period (NVML).",
)
MODEL_INFO = Metric(
    "fluxserve_model_info",
    "gauge",
    "The model this server serves (value 1).",
    (MODEL, REVISION, RELEASE),
)
AUDIT_WRITE_FAILURES = Metric(
    "fluxserve_audit_write_failures",
    "counter",
    "Audit lines that could not be written (their requests were refused with 503).",
)
AUDIT_FREE_BYTES = Metric(
    "fluxserve_audit_free_bytes",
    "gauge",
    "Bytes free on the audit log's volume (NaN: the log goes to stdout).",
)
READY = Metric("fluxserve_ready", "gauge", "1 when the model is loaded and warm.")
JOBS = Metric(
    "fluxserve_jobs",
    "gauge",
    "Async jobs this replica holds, by status (finished ones until --job-ttl).",
    (STATUS,),
)
WEBHOOK_DELIVERIES = Metric(
    "fluxserve_webhook_deliveries",
    "counter",
    "Webhook delivery attempts, by outcome: delivered, retried (a failed attempt that will "
    "be tried again), failed (given up), refused (address not allowed), dropped (delivery "
    "queue full).",
    (OUTCOME,),
)
MODEL_LOAD_SECONDS = Metric(
    "fluxserve_model_load_seconds",
    "gauge",
    "Seconds the pipeline took to load (weights read and moved to the device).",
)
STARTUP_PHASES = ("download", "load", "compile", "warmup")
"""The ``phase`` values of ``fluxserve_startup_seconds``, in the order a start runs them."""
STARTUP_SECONDS = Metric(
    "fluxserve_startup_seconds",
    "gauge",
    "Seconds this process's start spent in each phase: download (weights made local), "
    "load (read and placed on the device), compile (compile cache read and written, and "
    "warm-up calls that built a graph), warmup (the other warm-up calls). Their sum is the "
    "time to the first image. Only processes that load a model have it.",
    (PHASE,),
)
RECOMPILES = Metric(
    "fluxserve_recompiles",
    "counter",
    "torch.compile (re)compilations after the server became ready.",
)

_ARM = (EXPERIMENT, ARM)
EXPERIMENT_REQUESTS = Metric(
    "fluxserve_experiment_requests", "counter", "Requests served in an experiment arm.", _ARM
)
EXPERIMENT_REQUEST_DURATION = Metric(
    "fluxserve_experiment_request_duration_seconds",
    "histogram",
    "Time from arrival to answer of requests served in an experiment arm.",
    _ARM,
)
EXPERIMENT_GPU_SECONDS = Metric(
    "fluxserve_experiment_gpu_seconds",
    "counter",
    "Pipeline (engine) seconds attributed to an arm's images: a batch's time is shared "
    "among its images.",
    _ARM,
)
EXPERIMENT_IMAGES = Metric(
    "fluxserve_experiment_images",
    "counter",
    "Images generated for requests served in an experiment arm.",
    _ARM,
)
EXPERIMENT_FEEDBACK = Metric(
    "fluxserve_experiment_feedback",
    "counter",
    "Feedback events counted against the arm their request was served in (once per "
    "request and event; the sum of their values).",
    (EXPERIMENT, ARM, EVENT),
)
EXPERIMENT_ARM_INFO = Metric(
    "fluxserve_experiment_arm_info",
    "gauge",
    "The arms this replica serves (value 1); position 0 is the control arm.",
    (EXPERIMENT, ARM, PRESET, POSITION, WEIGHT),
)

EXPERIMENT_METRICS = (
    EXPERIMENT_REQUESTS,
    EXPERIMENT_REQUEST_DURATION,
    EXPERIMENT_GPU_SECONDS,
    EXPERIMENT_IMAGES,
    EXPERIMENT_FEEDBACK,
    EXPERIMENT_ARM_INFO,
)
ALL = (
    REQUESTS,
    REQUEST_DURATION,
    QUEUE_DEPTH,
    QUEUE_DEPTH_BY_PRIORITY,
    REQUESTS_RUNNING,
    BATCH_SIZE,
    INFERENCE_DURATION,
    IMAGES_GENERATED,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_ERRORS,
    SAFETY_REJECTIONS,
    GPU_MEMORY_USED,
    GPU_UTILIZATION,
    MODEL_INFO,
    AUDIT_WRITE_FAILURES,
    AUDIT_FREE_BYTES,
    READY,
    JOBS,
    WEBHOOK_DELIVERIES,
    MODEL_LOAD_SECONDS,
    STARTUP_SECONDS,
    RECOMPILES,
    *EXPERIMENT_METRICS,
)
"""Every metric a server exports."""


def series_names() -> frozenset[str]:
    """Every series name a server's ``/metrics`` can carry."""
    return frozenset(name for metric in ALL for name in metric.series)

"""Every Prometheus metric of one server, in its own registry (no global registry, so a
test process can run several servers)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from flux_client.experiments import Experiment
from flux_server.safety import SAFETY_REASONS

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    """The ``fluxserve_*`` metrics. ``fluxserve_queue_depth`` is what the HPA scales on."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, release: str = "dev") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fluxserve_requests",
            "Requests answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "fluxserve_request_duration_seconds",
            "Time from arrival to answer.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "fluxserve_queue_depth", "Requests waiting for a batch slot.", registry=r
        )
        self.running = Gauge(
            "fluxserve_requests_running",
            "Requests in the pipeline call running now.",
            registry=r,
        )
        self.batch_size = Histogram(
            "fluxserve_batch_size",
            "Requests per pipeline call.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=r,
        )
        self.inference_duration = Histogram(
            "fluxserve_inference_duration_seconds",
            "Duration of one pipeline call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images_generated = Counter(
            "fluxserve_images_generated", "Images the pipeline produced.", registry=r
        )
        self.cache_hits = Counter(
            "fluxserve_cache_hits", "Requests answered from the result cache.", registry=r
        )
        self.cache_misses = Counter(
            "fluxserve_cache_misses", "Cacheable requests not in the cache.", registry=r
        )
        self.cache_errors = Counter(
            "fluxserve_cache_errors", "Result cache failures (served as misses).", registry=r
        )
        self.safety_rejections = Counter(
            "fluxserve_safety_rejections",
            "Prompts the safety filter refused, by reason.",
            ["reason"],
            registry=r,
        )
        # Present from the start at 0, so a rate() or an alert sees the series before the
        # first refusal.
        for reason in SAFETY_REASONS:
            self.safety_rejections.labels(reason=reason)
        self.gpu_memory_used = Gauge(
            "fluxserve_gpu_memory_used_bytes",
            "GPU memory in use on this pod's GPU (NVML; torch's allocation without it).",
            registry=r,
        )
        self.gpu_utilization = Gauge(
            "fluxserve_gpu_utilization_ratio",
            "GPU busy fraction (0-1) over the driver's last sample period (NVML).",
            registry=r,
        )
        self.model_info = Gauge(
            "fluxserve_model_info",
            "The model this server serves (value 1).",
            ["model", "revision", "release"],
            registry=r,
        )
        self.audit_write_failures = Counter(
            "fluxserve_audit_write_failures",
            "Audit lines that could not be written (their requests were refused with 503).",
            registry=r,
        )
        self.audit_free_bytes = Gauge(
            "fluxserve_audit_free_bytes",
            "Bytes free on the audit log's volume (NaN: the log goes to stdout).",
            registry=r,
        )
        self.audit_free_bytes.set(math.nan)
        self.ready = Gauge("fluxserve_ready", "1 when the model is loaded and warm.", registry=r)
        self._nvml: _Nvml | None = None  # opened on the first scrape
        self.jobs = Gauge(
            "fluxserve_jobs",
            "Async jobs this replica holds, by status (finished ones until --job-ttl).",
            ["status"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "fluxserve_webhook_deliveries",
            "Webhook delivery attempts, by outcome: delivered, retried (a failed attempt "
            "that will be tried again), failed (given up), refused (address not allowed), "
            "dropped (delivery queue full).",
            ["outcome"],
            registry=r,
        )
        for status in ("queued", "running", "succeeded", "failed", "canceled"):
            self.jobs.labels(status=status)
        for outcome in ("delivered", "retried", "failed", "refused", "dropped"):
            self.webhook_deliveries.labels(outcome=outcome)
        self.model_load_seconds = Gauge(
            "fluxserve_model_load_seconds",
            "Seconds the pipeline took to load (weights read and moved to the device).",
            registry=r,
        )
        self.experiments = ExperimentMetrics(r)
        """The per-arm metrics of style-preset experiments."""
        r.register(_RecompilesCollector())

    def set_model(self, model: str, revision: str | None, release: str) -> None:
        self.model_info.labels(model=model, revision=revision or "", release=release).set(1)

    def sample_gpu(self) -> None:
        """Refresh the GPU gauges from NVML: the device's memory in use (every process's,
        as ``nvidia-smi`` shows it) and its busy fraction. Without NVML (no driver, no
        GPU) memory falls back to torch's own allocation, and without CUDA nothing is set."""
        if self._nvml is None:
            self._nvml = _Nvml.open()
        if self._nvml:
            sample = self._nvml.sample()
            if sample is not None:
                used, busy = sample
                self.gpu_memory_used.set(used)
                self.gpu_utilization.set(busy)
                return
        try:
            import torch
        except ImportError:  # pragma: no cover - the server always has torch
            return
        if torch.cuda.is_available():
            self.gpu_memory_used.set(torch.cuda.memory_allocated())

    def render(self) -> bytes:
        self.sample_gpu()
        return generate_latest(self.registry)


class _Nvml:
    """The first GPU NVML sees: in a pod, the one Kubernetes gave it. Falsy when NVML is
    absent or finds no GPU, so the caller asks only once."""

    def __init__(self, module: Any = None, handle: Any = None) -> None:
        self._module = module
        self._handle = handle

    def __bool__(self) -> bool:
        return self._handle is not None

    @classmethod
    def open(cls) -> _Nvml:
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() < 1:
                return cls()
            return cls(pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
        except Exception as exc:  # ImportError or any NVMLError: no GPU metrics, not a crash
            log.debug("NVML unavailable: %s", exc)
            return cls()

    def sample(self) -> tuple[int, float] | None:
        """(memory used in bytes, busy fraction), or None if the driver stops answering."""
        try:
            memory = self._module.nvmlDeviceGetMemoryInfo(self._handle)
            rates = self._module.nvmlDeviceGetUtilizationRates(self._handle)
        except Exception as exc:  # an NVMLError: keep serving, report what is known
            log.debug("NVML sample failed: %s", exc)
            return None
        return int(memory.used), float(rates.gpu) / 100.0


class ExperimentMetrics:
    """``fluxserve_experiment_*``: what each arm of an experiment served, cost and earned.
    Labels are bounded: experiments and arms come from the presets ConfigMap, event names
    are bounded per experiment by the feedback store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        arm = ["experiment", "arm"]
        self.requests = Counter(
            "fluxserve_experiment_requests",
            "Requests served in an experiment arm.",
            arm,
            registry=registry,
        )
        self.request_duration = Histogram(
            "fluxserve_experiment_request_duration_seconds",
            "Time from arrival to answer of requests served in an experiment arm.",
            arm,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.gpu_seconds = Counter(
            "fluxserve_experiment_gpu_seconds",
            "Pipeline (engine) seconds attributed to an arm's images: a batch's time is "
            "shared among its images.",
            arm,
            registry=registry,
        )
        self.images = Counter(
            "fluxserve_experiment_images",
            "Images generated for requests served in an experiment arm.",
            arm,
            registry=registry,
        )
        self.feedback = Counter(
            "fluxserve_experiment_feedback",
            "Feedback events counted against the arm their request was served in "
            "(once per request and event; the sum of their values).",
            ["experiment", "arm", "event"],
            registry=registry,
        )
        self.arm_info = Gauge(
            "fluxserve_experiment_arm_info",
            "The arms this replica serves (value 1); position 0 is the control arm.",
            ["experiment", "arm", "preset", "position", "weight"],
            registry=registry,
        )

    def set_experiments(self, experiments: Sequence[Experiment]) -> None:
        """Describe the experiments in force (at start and after each reload), and create
        their arms' series at 0 so that a rate() sees them before the first request."""
        self.arm_info.clear()
        for experiment in experiments:
            for position, arm in enumerate(experiment.arms):
                labels = {"experiment": experiment.name, "arm": arm.name}
                self.arm_info.labels(
                    **labels, preset=arm.preset, position=str(position), weight=str(arm.weight)
                ).set(1)
                self.requests.labels(**labels)
                self.request_duration.labels(**labels)
                self.gpu_seconds.labels(**labels)
                self.images.labels(**labels)

    def observe_request(
        self, experiment: str, arm: str, seconds: float, gpu_seconds: float, images: int
    ) -> None:
        """One request served in ``arm``: its latency, its images, the engine time they took."""
        self.requests.labels(experiment, arm).inc()
        self.request_duration.labels(experiment, arm).observe(seconds)
        self.gpu_seconds.labels(experiment, arm).inc(gpu_seconds)
        self.images.labels(experiment, arm).inc(images)

    def count_feedback(self, experiment: str, arm: str, event: str, value: float) -> None:
        self.feedback.labels(experiment, arm, event).inc(value)


class _RecompilesCollector(Collector):
    """``fluxserve_recompiles_total``: torch.compile graphs built after the warm-up, read
    from dynamo's counters at scrape time (0 is the goal: each one is a request that
    waited for a compile)."""

    def collect(self) -> Any:
        from flux_server.speedups import recompiles_since_ready

        family = CounterMetricFamily(
            "fluxserve_recompiles",
            "torch.compile (re)compilations after the server became ready.",
        )
        family.add_metric([], recompiles_since_ready())
        yield family

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

from flux_contract import metrics as names
from flux_contract.experiments import Experiment

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    """The ``fluxserve_*`` metrics, as :mod:`flux_contract.metrics` names them.
    ``fluxserve_queue_depth`` is what the HPA scales on."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, release: str = "dev") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = _counter(names.REQUESTS, r)
        self.request_duration = _histogram(names.REQUEST_DURATION, r, LATENCY_BUCKETS)
        self.queue_depth = _gauge(names.QUEUE_DEPTH, r)
        self.queue_depth_by_priority = _gauge(names.QUEUE_DEPTH_BY_PRIORITY, r)
        self.set_depth(0, 0)  # both series from the start, for the HPA and alerts
        self.running = _gauge(names.REQUESTS_RUNNING, r)
        self.batch_size = _histogram(names.BATCH_SIZE, r, (1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
        self.inference_duration = _histogram(names.INFERENCE_DURATION, r, LATENCY_BUCKETS)
        self.images_generated = _counter(names.IMAGES_GENERATED, r)
        self.cache_hits = _counter(names.CACHE_HITS, r)
        self.cache_misses = _counter(names.CACHE_MISSES, r)
        self.cache_errors = _counter(names.CACHE_ERRORS, r)
        self.safety_rejections = _counter(names.SAFETY_REJECTIONS, r)
        self.gpu_memory_used = _gauge(names.GPU_MEMORY_USED, r)
        self.gpu_utilization = _gauge(names.GPU_UTILIZATION, r)
        self.model_info = _gauge(names.MODEL_INFO, r)
        self.audit_write_failures = _counter(names.AUDIT_WRITE_FAILURES, r)
        self.ready = _gauge(names.READY, r)
        self.audit_free_bytes = _gauge(names.AUDIT_FREE_BYTES, r)
        self.audit_free_bytes.set(math.nan)
        self._nvml: _Nvml | None = None  # opened on the first scrape
        self.jobs = _gauge(names.JOBS, r)
        self.webhook_deliveries = _counter(names.WEBHOOK_DELIVERIES, r)
        for status in names.JOB_STATUSES:
            self.jobs.labels(status=status)
        for outcome in names.WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome=outcome)
        self.model_load_seconds = _gauge(names.MODEL_LOAD_SECONDS, r)
        # Set by the runner as each phase ends; a front (no model) has no series.
        self.startup_seconds = _gauge(names.STARTUP_SECONDS, r)
        self.experiments = ExperimentMetrics(r)
        """The per-arm metrics of style-preset experiments."""
        r.register(_RecompilesCollector())

    def set_depth(self, high: int, normal: int) -> None:
        """The requests waiting: ``fluxserve_queue_depth`` and its split by priority."""
        self.queue_depth.set(high + normal)
        self.queue_depth_by_priority.labels(priority="high").set(high)
        self.queue_depth_by_priority.labels(priority="normal").set(normal)

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


def _counter(metric: names.Metric, registry: CollectorRegistry) -> Counter:
    return Counter(metric.name, metric.help, metric.labels, registry=registry)


def _gauge(metric: names.Metric, registry: CollectorRegistry) -> Gauge:
    return Gauge(metric.name, metric.help, metric.labels, registry=registry)


def _histogram(
    metric: names.Metric, registry: CollectorRegistry, buckets: Sequence[float]
) -> Histogram:
    return Histogram(metric.name, metric.help, metric.labels, buckets=buckets, registry=registry)


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
        self.requests = _counter(names.EXPERIMENT_REQUESTS, registry)
        self.request_duration = _histogram(
            names.EXPERIMENT_REQUEST_DURATION, registry, LATENCY_BUCKETS
        )
        self.gpu_seconds = _counter(names.EXPERIMENT_GPU_SECONDS, registry)
        self.images = _counter(names.EXPERIMENT_IMAGES, registry)
        self.feedback = _counter(names.EXPERIMENT_FEEDBACK, registry)
        self.arm_info = _gauge(names.EXPERIMENT_ARM_INFO, registry)

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
        from flux_server.execution.speedups import recompiles_since_ready

        family = CounterMetricFamily(names.RECOMPILES.name, names.RECOMPILES.help)
        family.add_metric([], recompiles_since_ready())
        yield family

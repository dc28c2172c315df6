"""The metric names the README documents and the dashboard, alerts and HPA rely on
(histograms by their ``_bucket`` series), spelled by ``flux_contract.metrics``."""

from flux_contract import metrics


def _queried(metric: metrics.Metric) -> str:
    return metric.bucket if metric.kind == "histogram" else metric.series[0]


SERVER_METRICS = frozenset(
    _queried(metric)
    for metric in (
        metrics.REQUESTS,
        metrics.REQUEST_DURATION,
        metrics.QUEUE_DEPTH,
        metrics.BATCH_SIZE,
        metrics.IMAGES_GENERATED,
        metrics.CACHE_HITS,
        metrics.CACHE_MISSES,
        metrics.CACHE_ERRORS,
        metrics.SAFETY_REJECTIONS,
        metrics.GPU_MEMORY_USED,
        metrics.GPU_UTILIZATION,
        metrics.MODEL_INFO,
        metrics.MODEL_LOAD_SECONDS,
        metrics.STARTUP_SECONDS,
        metrics.READY,
        metrics.JOBS,
        metrics.WEBHOOK_DELIVERIES,
        metrics.RECOMPILES,
        metrics.AUDIT_FREE_BYTES,
    )
)

EXPERIMENT_METRICS = frozenset(_queried(metric) for metric in metrics.EXPERIMENT_METRICS)
"""Per-arm metrics of style-preset experiments, documented in the README and on the
dashboard like SERVER_METRICS; their series exist only while an experiment runs."""

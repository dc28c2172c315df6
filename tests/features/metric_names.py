"""The metric names the README documents and the dashboard, alerts and HPA rely on
(histograms by their ``_bucket`` series)."""

SERVER_METRICS = frozenset(
    {
        "fluxserve_requests_total",
        "fluxserve_request_duration_seconds_bucket",
        "fluxserve_queue_depth",
        "fluxserve_batch_size_bucket",
        "fluxserve_images_generated_total",
        "fluxserve_cache_hits_total",
        "fluxserve_cache_misses_total",
        "fluxserve_cache_errors_total",
        "fluxserve_safety_rejections_total",
        "fluxserve_gpu_memory_used_bytes",
        "fluxserve_gpu_utilization_ratio",
        "fluxserve_model_info",
        "fluxserve_model_load_seconds",
        "fluxserve_ready",
        "fluxserve_jobs",
        "fluxserve_webhook_deliveries_total",
        "fluxserve_recompiles_total",
        "fluxserve_audit_free_bytes",
    }
)

EXPERIMENT_METRICS = frozenset(
    {
        "fluxserve_experiment_requests_total",
        "fluxserve_experiment_request_duration_seconds_bucket",
        "fluxserve_experiment_gpu_seconds_total",
        "fluxserve_experiment_images_total",
        "fluxserve_experiment_feedback_total",
        "fluxserve_experiment_arm_info",
    }
)
"""Per-arm metrics of style-preset experiments, documented in the README and on the
dashboard like SERVER_METRICS; their series exist only while an experiment runs."""

"""All operator settings in one object, built in ``main()`` from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RetrySettings:
    """Retries of API calls that may clear up (409 conflict, 429, 5xx, connection errors)."""

    attempts: int = 6
    """Tries per reconciliation before giving up until the next event."""
    first_delay: float = 0.5
    """Seconds before the second try; doubled each time."""
    max_delay: float = 10.0
    """Longest wait between tries."""


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = all namespaces (cluster-wide)."""
    peering: str | None = None
    """kopf peering name for leader election; None = standalone."""
    priority: int = 0
    """This operator's priority among its peers: the highest live one acts, the others wait.
    Peers must differ: kopf pauses every operator when two share the top priority."""
    identity: str | None = None
    """This operator's name among its peers (kopf's peering identity); None = the pod name
    (POD_ID), else one unique to the process."""
    health_port: int = 8080
    """Port of the liveness endpoint ``/healthz`` (0 = off)."""
    kubeconfig: Path | None = None
    """Kubeconfig file; None = $KUBECONFIG, ~/.kube/config, then in-cluster."""
    log_format: str = "json"
    """``json`` or ``plain``."""
    verbose: bool = False
    """Debug logging."""
    retry: RetrySettings = field(default_factory=RetrySettings)
    """API retries."""
    api_threads: int = 16
    """Threads for blocking Kubernetes client calls."""
    resync_seconds: float = 300.0
    """Every so often reconcile every resource even without events (repairs children
    deleted or edited behind the operator's back); 0 = off."""
    watch_timeout_seconds: int = 600
    """Server-side watch timeout (kopf reconnects from the last resourceVersion)."""

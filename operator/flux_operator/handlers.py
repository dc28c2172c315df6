"""kopf wiring: the handlers the operator registers, and nothing else.

Every handler routes to ``Reconciler.reconcile`` (the I/O of one reconciliation, in
``reconciler``), which asks ``reconcile.plan`` (pure) what to do. The periodic pass is
started here and lives in ``resync``. A new kind of child to watch (a second Deployment,
an HTTPRoute) is one more ``@kopf.on.event`` below that routes to the owner, as
``deployment_event`` does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from flux_operator.kube import KubeApi, load_configuration
from flux_operator.reconciler import TRANSIENT_FAILURES, Reconciler
from flux_operator.render import MANAGER, OWNER_LABEL
from flux_operator.resync import start_resync
from flux_operator.settings import OperatorSettings
from flux_operator.spec import GROUP, PLURAL, VERSION

logger = logging.getLogger(__name__)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's body views as plain dicts (the nested values are plain already)."""
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in body.items()}


def _connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """The kubernetes client's configuration as kopf's credentials (one configuration for
    both: kubeconfig, in-cluster, or --kubeconfig)."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class _Operator:
    """What the handlers share: the API configuration, the reconciler (from startup to
    cleanup) and the periodic pass."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.configuration = load_configuration(settings.kubeconfig)
        self.reconciler: Reconciler | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, kopf_settings: kopf.OperatorSettings) -> None:
        kopf_settings.posting.level = logging.INFO
        kopf_settings.watching.server_timeout = self.settings.watch_timeout_seconds
        api = KubeApi(self.configuration, self.settings.retry, self.settings.api_threads)
        self.reconciler = Reconciler(api)
        task = start_resync(api, self.settings, self.reconcile)
        if task is not None:
            self.tasks.append(task)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        reconciler, self.reconciler = self.reconciler, None
        if reconciler is not None:
            reconciler.close()
            reconciler.api.close()

    async def reconcile(self, namespace: str, name: str) -> None:
        assert self.reconciler is not None, "reconciling before startup"
        try:
            await self.reconciler.reconcile(namespace, name)
        except TRANSIENT_FAILURES as exc:
            # Retried inside KubeApi already; the next event or re-list tries again.
            logger.error(
                "reconciliation failed", extra={"object": f"{namespace}/{name}", "error": str(exc)}
            )

    async def resource_event(
        self, event: kopf.RawEvent, body: kopf.Body, namespace: str, name: str
    ) -> None:
        reconciler = self.reconciler
        assert reconciler is not None, "an event before startup"
        if event.get("type") == "DELETED":
            reconciler.forget(namespace, name)
            return
        if reconciler.settled(_plain(body)):
            return  # the echo of our own status write
        await self.reconcile(namespace, name)


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the operator's handlers (no module-level state)."""
    registry = kopf.OperatorRegistry()
    operator = _Operator(settings)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return _connection_info(operator.configuration)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        await operator.start(settings)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await operator.stop()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def fluxdeployment_event(
        *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        await operator.resource_event(event, body, namespace or "default", name)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={"app.kubernetes.io/managed-by": MANAGER},
        registry=registry,
    )
    async def deployment_event(
        *, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        owner = labels.get(OWNER_LABEL)
        if owner and namespace:
            await operator.reconcile(namespace, owner)

    return registry

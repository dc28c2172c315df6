"""kopf wiring: the handlers the operator registers, and nothing else.

Every handler routes to ``Reconciler.reconcile`` (the I/O of one reconciliation, in
``reconciler``), which asks ``reconcile.plan`` (pure) what to do. The periodic pass is
started here and lives in ``resync``.

The reconciler reads nothing from the API server: kopf indexes every FluxDeployment and
every object of each kind of child (``cache.CHILD_KINDS``), and ``cache.WatchCache`` reads
those indexes. A new kind of child is one more entry of ``CHILD_KINDS``; an event of a child that
should reconcile its owner at once (as the Deployment's rollout does) is one more
``@kopf.on.event`` that routes to the owner, as ``deployment_event`` does. One CRD is
indexed too, KEDA's ScaledObject's (``cache.CRDS``): whether KEDA is installed decides
between the ScaledObject and the HPA, and the periodic pass acts on it when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from flux_operator.cache import CHILD_KINDS, CONFIG_MAPS_BY_OWNER, CRDS, MANAGED, WatchCache, keep
from flux_operator.kube import KINDS, KubeApi, load_configuration
from flux_operator.reconciler import TRANSIENT_FAILURES, Reconciler
from flux_operator.render import MANAGER, OWNER_LABEL
from flux_operator.render.keda import KEDA_CRD
from flux_operator.render.training import TRAINING_LABEL
from flux_operator.resync import start_progress, start_resync
from flux_operator.settings import OperatorSettings
from flux_operator.spec import GROUP, PLURAL, VERSION
from flux_operator.spec.training import TRAINING_PLURAL
from flux_operator.training_reconciler import TrainingReconciler

logger = logging.getLogger(__name__)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's body views as plain dicts (the nested values are plain already)."""
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in body.items()}


class _NoDiffBase(kopf.DiffBaseStorage):
    """No "essence" of each object: kopf builds one per watch event (a deep copy of the
    object) to find what changed for resource-changing handlers, and this operator has
    none (only event handlers and indexes; it compares with what it rendered itself)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: Any, essence: Any) -> None:
        return None


def _register_indexes(registry: kopf.OperatorRegistry) -> None:
    """kopf's indexes of the FluxDeployments and their children, by (namespace, name); the
    operator's ConfigMaps also by the FluxDeployment they belong to."""

    def by_name(kind: str) -> Any:
        def index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
            return {(namespace or "default", name): keep(kind, body)}

        return index

    info = KINDS["FluxDeployment"]
    kopf.index(info.group, info.version, info.plural, id="FluxDeployment", registry=registry)(
        by_name("FluxDeployment")
    )
    for kind in CHILD_KINDS:
        info = KINDS[kind]
        kopf.index(info.group, info.version, info.plural, id=kind, registry=registry)(by_name(kind))
    info = KINDS[CRDS]
    kopf.index(
        info.group,
        info.version,
        info.plural,
        id=CRDS,
        when=lambda name, **_: name == KEDA_CRD,
        registry=registry,
    )(by_name(CRDS))
    info = KINDS["ConfigMap"]
    kopf.index(
        info.group, info.version, info.plural, id="ConfigMap", labels=MANAGED, registry=registry
    )(by_name("ConfigMap"))

    @kopf.index(
        info.group,
        info.version,
        info.plural,
        id=CONFIG_MAPS_BY_OWNER,
        labels=MANAGED,
        registry=registry,
    )
    def config_maps_by_owner(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> Any:
        owner = labels.get(OWNER_LABEL)
        return {(namespace or "default", owner): keep("ConfigMap", body)} if owner else None


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
        self.training: TrainingReconciler | None = None
        self.cache: WatchCache | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, kopf_settings: kopf.OperatorSettings, indexes: Mapping[str, Any]) -> None:
        kopf_settings.posting.level = logging.INFO
        kopf_settings.watching.server_timeout = self.settings.watch_timeout_seconds
        kopf_settings.persistence.diffbase_storage = _NoDiffBase()
        api = KubeApi(self.configuration, self.settings.retry, self.settings.api_threads)
        kinds = ("FluxDeployment", *CHILD_KINDS, "ConfigMap", CONFIG_MAPS_BY_OWNER, CRDS)
        cache = WatchCache({kind: indexes[kind] for kind in kinds})
        self.cache, self.reconciler = cache, Reconciler(api, cache)
        self.training = TrainingReconciler(api)
        task = start_resync(api, cache, self.settings, self.reconcile)
        training = self.training
        progress = start_progress(
            api,
            self.settings,
            lambda: sorted(training.running),
            lambda namespace, name: self.train(namespace, name, read_log=True),
        )
        self.tasks += [t for t in (task, progress) if t is not None]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        reconciler, self.reconciler = self.reconciler, None
        if reconciler is not None:
            reconciler.close()
            reconciler.api.close()

    def indexed(self) -> None:
        """A handler runs: kopf has indexed every kind (it calls none before)."""
        assert self.cache is not None, "an event before startup"
        self.cache.ready.set()

    async def reconcile(self, namespace: str, name: str, *, changed_only: bool = False) -> None:
        assert self.reconciler is not None, "reconciling before startup"
        try:
            await self.reconciler.reconcile(namespace, name, changed_only=changed_only)
        except TRANSIENT_FAILURES as exc:
            # Retried inside KubeApi already; the next event or re-list tries again.
            logger.error(
                "reconciliation failed", extra={"object": f"{namespace}/{name}", "error": str(exc)}
            )

    async def train(self, namespace: str, name: str, *, read_log: bool = False) -> None:
        assert self.training is not None, "reconciling before startup"
        try:
            await self.training.reconcile(namespace, name, read_log=read_log)
        except TRANSIENT_FAILURES as exc:
            logger.error(
                "training reconciliation failed",
                extra={"object": f"{namespace}/{name}", "error": str(exc)},
            )

    async def resource_event(
        self, event: kopf.RawEvent, body: kopf.Body, namespace: str, name: str
    ) -> None:
        reconciler = self.reconciler
        assert reconciler is not None, "an event before startup"
        self.indexed()
        if event.get("type") == "DELETED":
            reconciler.forget(namespace, name)
            return
        if reconciler.settled(_plain(body)):
            return  # the echo of our own status write
        await self.reconcile(namespace, name, changed_only=True)


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the operator's handlers (no module-level state)."""
    registry = kopf.OperatorRegistry()
    operator = _Operator(settings)
    _register_indexes(registry)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return _connection_info(operator.configuration)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        await operator.start(settings, kwargs)  # kopf passes its indexes by their ids

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
        *, body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        operator.indexed()
        owner = labels.get(OWNER_LABEL)
        reconciler = operator.reconciler
        if reconciler is not None and reconciler.deployment_settled(_plain(body)):
            return  # the echo of our own write
        if owner and namespace:
            await operator.reconcile(namespace, owner, changed_only=True)

    _register_training(registry, operator)
    return registry


def _register_training(registry: kopf.OperatorRegistry, operator: _Operator) -> None:
    """FluxLoRATraining's handlers: the resource, and the Jobs it owns."""

    @kopf.on.event(GROUP, VERSION, TRAINING_PLURAL, registry=registry)
    async def training_event(
        *, event: kopf.RawEvent, namespace: str | None, name: str, **_: Any
    ) -> None:
        if event.get("type") != "DELETED":  # its Job goes with it (owner reference)
            await operator.train(namespace or "default", name)

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={"app.kubernetes.io/managed-by": MANAGER, TRAINING_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def training_job_event(
        *, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        owner = labels.get(TRAINING_LABEL)
        if owner and namespace:
            await operator.train(namespace, owner)

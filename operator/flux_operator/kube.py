"""The one module that talks to the Kubernetes API (besides kopf's own watching).

A thin async layer over the official ``kubernetes`` client: plain dicts in and out
(no generated models: they would reject objects the API server itself accepts), server-side
apply for what the operator owns, merge patches for status, and retries with backoff
for errors that may clear up (409 conflict, 429, 5xx, a dropped connection).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import kubernetes
import urllib3

from flux_operator.render import FIELD_MANAGER, MANAGER
from flux_operator.settings import RetrySettings

TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})

_T = TypeVar("_T")


def _version() -> str:
    try:
        return importlib.metadata.version("fluxserve")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


USER_AGENT = f"{MANAGER}/{_version()}"
"""How the API server's audit log names the operator's requests (kopf's say ``kopf/``)."""

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A response from the API server other than 2xx."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS: dict[str, Kind] = {
    "ConfigMap": Kind("", "v1", "configmaps"),
    "Service": Kind("", "v1", "services"),
    "Event": Kind("", "v1", "events"),
    "Deployment": Kind("apps", "v1", "deployments"),
    "HorizontalPodAutoscaler": Kind("autoscaling", "v2", "horizontalpodautoscalers"),
    "NetworkPolicy": Kind("networking.k8s.io", "v1", "networkpolicies"),
    "FluxDeployment": Kind("fluxserve.dev", "v1alpha1", "fluxdeployments"),
    "HTTPRoute": Kind("gateway.networking.k8s.io", "v1", "httproutes"),
    "ScaledObject": Kind("keda.sh", "v1alpha1", "scaledobjects"),
    "PersistentVolumeClaim": Kind("", "v1", "persistentvolumeclaims"),
    "CustomResourceDefinition": Kind(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False
    ),
    "FluxLoRATraining": Kind("fluxserve.dev", "v1alpha1", "fluxloratrainings"),
    "Job": Kind("batch", "v1", "jobs"),
    "Pod": Kind("", "v1", "pods"),
    "TrainJob": Kind("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "KopfPeering": Kind("kopf.dev", "v1", "kopfpeerings"),
    "ClusterKopfPeering": Kind("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False),
}


@dataclass(frozen=True)
class _Call:
    """One API request, as sent (and sent again on a retry)."""

    method: str
    path: str
    body: Any = None
    query: dict[str, str] | None = None
    content_type: str = "application/json"
    accept: str = "application/json"


def object_path(
    kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    info = KINDS[kind]
    base = f"/api/{info.version}" if not info.group else f"/apis/{info.group}/{info.version}"
    if info.namespaced and namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    path = f"{base}/{info.plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


def load_configuration(kubeconfig: Path | None) -> kubernetes.client.Configuration:
    """Client configuration from a kubeconfig file, else $KUBECONFIG/~/.kube, else in-cluster."""
    config = kubernetes.client.Configuration()
    if kubeconfig is not None and not kubeconfig.is_file():
        raise kubernetes.config.ConfigException(f"kubeconfig {kubeconfig}: no such file")
    if kubeconfig is not None:
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        return config
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)
    return config


def default_namespace(kubeconfig: Path | None) -> str:
    """The current context's namespace (for the CLI), ``default`` when it names none."""
    try:
        _, context = kubernetes.config.list_kube_config_contexts(
            config_file=str(kubeconfig) if kubeconfig else None
        )
        return str(context.get("context", {}).get("namespace") or "default")
    except (kubernetes.config.ConfigException, OSError, TypeError):
        return "default"


class KubeApi:
    """Async access to the objects the operator reads and writes."""

    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        retry: RetrySettings,
        threads: int = 16,
    ) -> None:
        configuration.connection_pool_maxsize = max(threads, 4)
        self._client = kubernetes.client.ApiClient(configuration)
        self._retry = retry
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # --- transport ------------------------------------------------------------------------

    def _request_sync(self, call: _Call) -> Any:
        headers = {
            "Accept": call.accept,
            "Content-Type": call.content_type,
            "User-Agent": USER_AGENT,
        }
        self._client.update_params_for_auth(
            headers, [], ["BearerToken"], call.path, call.method, call.body
        )
        url = self._client.configuration.host + call.path
        if call.query:
            url += "?" + urlencode(call.query)
        response = self._client.call_api(call.method, url, header_params=headers, body=call.body)
        response.read()
        text = call.accept != "application/json" and 200 <= response.status < 300
        if text:  # a Pod's log: plain text
            return response.data.decode("utf-8", "replace") if response.data else ""
        try:
            data: Any = json.loads(response.data) if response.data else {}
        except ValueError:
            if 200 <= response.status < 300:
                raise
            data = bytes(response.data or b"").decode("utf-8", "replace")  # an error page
        if not 200 <= response.status < 300:
            raise ApiError(
                response.status,
                str(data.get("reason", "")) if isinstance(data, dict) else "",
                str(data.get("message", "")) if isinstance(data, dict) else str(data),
                call.method,
                call.path,
            )
        return data

    async def _in_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        retry_conflicts: bool = True,
        accept: str = "application/json",
    ) -> Any:
        call = _Call(method, path, body, query, content_type, accept)
        delay = self._retry.first_delay
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return await self._in_thread(self._request_sync, call)
            except ApiError as exc:
                retryable = exc.transient and (retry_conflicts or exc.status != 409)
                if not retryable or attempt == self._retry.attempts:
                    raise
                failure: Exception = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == self._retry.attempts:
                    raise
                failure = exc
            logger.warning(
                "API call failed, retrying",
                extra={"method": method, "path": path, "attempt": attempt, "error": str(failure)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry.max_delay)
        raise AssertionError("unreachable")

    # --- objects --------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request("GET", object_path(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def log_tail(
        self, namespace: str, pod: str, container: str, lines: int, limit_bytes: int
    ) -> str:
        """The last ``lines`` lines (at most ``limit_bytes``) of a container's log; ""
        when the Pod is gone or has no log yet."""
        query = {"container": container, "tailLines": str(lines), "limitBytes": str(limit_bytes)}
        path = object_path("Pod", namespace, pod, "log")
        try:
            return str(await self.request("GET", path, query=query, accept="text/plain"))
        except ApiError as exc:
            if exc.status in (400, 404):  # gone, or its container not started yet
                return ""
            raise

    async def list(
        self, kind: str, namespace: str | None, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        data = await self.request(
            "GET", object_path(kind, namespace), query={"labelSelector": selector}
        )
        items: list[dict[str, Any]] = data.get("items", [])
        # Filter here too: the selector is the server's job, but being exact costs nothing.
        return [
            item
            for item in items
            if all(
                item.get("metadata", {}).get("labels", {}).get(k) == v for k, v in labels.items()
            )
        ]

    async def apply(
        self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply of the fields the operator owns (created when absent)."""
        meta = obj["metadata"]
        path = object_path(obj["kind"], meta.get("namespace"), meta["name"])
        query = {"fieldManager": field_manager, "force": "true"}
        try:
            result: dict[str, Any] = await self.request(
                "PATCH", path, obj, query, content_type="application/apply-patch+yaml"
            )
            return result
        except ApiError as exc:
            # A real API server creates on apply; a server without apply support answers 404
            # (or 415): create it then, and treat a racing creation as success.
            if exc.status not in (404, 415):
                raise
        try:
            return await self._post(obj)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return await self.merge_patch(obj["kind"], meta.get("namespace"), meta["name"], obj)

    async def _post(self, obj: dict[str, Any]) -> dict[str, Any]:
        # A 409 here means someone else created it first: the callers decide what then.
        created: dict[str, Any] = await self.request(
            "POST",
            object_path(obj["kind"], obj["metadata"].get("namespace")),
            obj,
            {"fieldManager": FIELD_MANAGER},
            retry_conflicts=False,
        )
        return created

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object known to be absent; if it appeared meanwhile, apply instead."""
        try:
            return await self._post(obj)
        except ApiError as exc:
            if exc.status != 409:
                raise
        return await self.apply(obj)

    async def create_once(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create an immutable object: the object created, or None when it existed (no
        read first: the answer says so)."""
        try:
            return await self._post(obj)
        except ApiError as exc:
            if exc.status != 409:
                raise
        return None

    async def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH",
            object_path(kind, namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        try:
            await self.request(
                "DELETE",
                object_path(kind, namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

"""The cluster-facing commands: run the operator, print the history, request a rollback,
promote or abort a canary."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, cast

import kopf
import kubernetes
import urllib3
import yaml

from flux_operator.handlers import build_registry
from flux_operator.kube import ApiError, KubeApi, default_namespace, load_configuration
from flux_operator.logs import configure as configure_logging
from flux_operator.peering import own_identity
from flux_operator.render import ABORT_ANNOTATION, PROMOTE_ANNOTATION, ROLLBACK_ANNOTATION
from flux_operator.settings import OperatorSettings, RetrySettings
from flux_operator.spec import FluxDeploymentStatus


def peering_priority(identity: str) -> int:
    """A priority for leader election that differs between peers.

    kopf pauses *every* operator that sees a live peer of equal priority, so replicas of
    one Deployment (same arguments) need distinct numbers. Hashing the peer's identity
    (the pod name in a cluster) keeps the number stable across restarts of the same pod
    and readable in the peering object.
    """
    return zlib.crc32(identity.encode()) & 0x7FFFFFFF


def with_identity(
    settings: OperatorSettings, environ: Mapping[str, str] = os.environ
) -> OperatorSettings:
    """``settings`` with the peer identity and priority filled in (kopf needs both)."""
    identity = settings.identity or own_identity(environ)
    priority = settings.priority if settings.priority is not None else peering_priority(identity)
    return settings.model_copy(update={"identity": identity, "priority": priority})


def health_port_problem(port: int) -> str | None:
    """Why the liveness endpoint cannot listen on ``port`` (bound as aiohttp binds it),
    or None. Checked before kopf starts: kopf's own failure is a chain of tracebacks."""
    if port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            return f"--health-port {port}: {exc.strerror or exc}"
    return None


async def operate(settings: OperatorSettings, stop_flag: asyncio.Event | None = None) -> None:
    """Run the operator until ``stop_flag`` is set (or forever)."""
    settings = with_identity(settings)
    registry = build_registry(settings)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    await kopf.operator(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=settings.priority or 0,
        identity=cast(Any, settings.identity),  # kopf's Identity is a NewType of str
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
    )


def run(settings: OperatorSettings) -> int:
    problem = health_port_problem(settings.health_port)
    if problem is not None:
        return _fail(problem)
    try:
        load_configuration(settings.kubeconfig)  # fail in one line, before kopf starts
    except kubernetes.config.ConfigException as exc:
        return _fail(f"no Kubernetes configuration: {exc}")
    configure_logging(settings.log_format, settings.verbose)
    try:
        asyncio.run(operate(settings))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # Taken between the check above and kopf's bind.
        return _fail(f"--health-port {settings.health_port}: {exc.strerror or exc}")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# What a command meets when the cluster cannot be reached (after KubeApi's retries).
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)


def _api(kubeconfig: Path | None) -> KubeApi:
    return KubeApi(load_configuration(kubeconfig), RetrySettings(attempts=3), threads=2)


def format_history(status: FluxDeploymentStatus) -> str:
    rows = [("REVISION", "RELEASE", "OUTCOME", "TIME", "PRESETS", "IMAGE")]
    for entry in status.history:
        marker = "*" if entry.revision == status.current_revision else " "
        rows.append(
            (
                f"{marker}{entry.revision}",
                entry.release,
                entry.outcome,
                entry.time,
                entry.presets_hash,
                entry.image,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _against_cluster(
    kubeconfig: Path | None, work: Callable[[KubeApi], Coroutine[Any, Any, int]]
) -> int:
    """Run a command's API calls; configuration and connection problems are one error
    line and exit 1, not a traceback."""
    try:
        api = _api(kubeconfig)
    except kubernetes.config.ConfigException as exc:
        return _fail(f"no Kubernetes configuration: {exc}")
    try:
        return asyncio.run(work(api))
    except ApiError as exc:
        return _fail(str(exc))
    except _UNREACHABLE as exc:
        return _fail(f"cannot reach the Kubernetes API: {exc}")
    finally:
        api.close()


async def _get_flux_deployment(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    body = await api.get("FluxDeployment", namespace, name)
    if body is None:
        print(f"error: FluxDeployment {namespace}/{name} not found", file=sys.stderr)
    return body


async def _history(api: KubeApi, name: str, namespace: str, output: str) -> int:
    body = await _get_flux_deployment(api, namespace, name)
    if body is None:
        return 1
    status = FluxDeploymentStatus.model_validate(body.get("status") or {})
    if output == "yaml":
        dumped = status.model_dump(by_alias=True, exclude_none=True)["history"]
        sys.stdout.write(yaml.safe_dump(dumped, sort_keys=False))
    else:
        print(format_history(status))
    return 0


def history(name: str, namespace: str | None, output: str, kubeconfig: Path | None = None) -> int:
    namespace = namespace or default_namespace(kubeconfig)
    return _against_cluster(kubeconfig, lambda api: _history(api, name, namespace, output))


async def _rollback(api: KubeApi, name: str, namespace: str, release: str, wait: float) -> int:
    body = await _get_flux_deployment(api, namespace, name)
    if body is None:
        return 1
    status = FluxDeploymentStatus.model_validate(body.get("status") or {})
    releases = [e.release for e in status.history]
    if release not in releases:
        print(
            f"error: release {release!r} is not in the history of {namespace}/{name} "
            f"(known: {', '.join(dict.fromkeys(releases)) or 'none'})",
            file=sys.stderr,
        )
        return 1
    annotations = body.get("metadata", {}).get("annotations") or {}
    if annotations.get(ROLLBACK_ANNOTATION) == release:
        # The operator acts once per annotation value: clear it, let it notice, set it again.
        await api.merge_patch(
            "FluxDeployment",
            namespace,
            name,
            {"metadata": {"annotations": {ROLLBACK_ANNOTATION: None}}},
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            fresh = await api.get("FluxDeployment", namespace, name) or {}
            if not (fresh.get("status") or {}).get("handledRollbackTo"):
                break
            await asyncio.sleep(0.5)
    await api.merge_patch(
        "FluxDeployment",
        namespace,
        name,
        {"metadata": {"annotations": {ROLLBACK_ANNOTATION: release}}},
    )
    print(f"fluxdeployment {namespace}/{name}: rollback to {release} requested")
    return 0


def rollback(name: str, namespace: str | None, release: str, kubeconfig: Path | None = None) -> int:
    namespace = namespace or default_namespace(kubeconfig)
    return _against_cluster(
        kubeconfig, lambda api: _rollback(api, name, namespace, release, wait=30.0)
    )


async def _canary_request(api: KubeApi, action: str, name: str, namespace: str) -> int:
    body = await _get_flux_deployment(api, namespace, name)
    if body is None:
        return 1
    status = FluxDeploymentStatus.model_validate(body.get("status") or {})
    canary = status.canary
    if canary is None or canary.phase not in ("Starting", "Progressing", "Paused"):
        state = "no canary" if canary is None else f"canary {canary.release} is {canary.phase}"
        return _fail(f"{namespace}/{name} has no running canary to {action} ({state})")
    # The annotation names the release: the operator acts on it once, for this canary only.
    key = PROMOTE_ANNOTATION if action == "promote" else ABORT_ANNOTATION
    await api.merge_patch(
        "FluxDeployment", namespace, name, {"metadata": {"annotations": {key: canary.release}}}
    )
    print(f"fluxdeployment {namespace}/{name}: {action} of canary {canary.release} requested")
    return 0


def canary_request(
    action: str, name: str, namespace: str | None, kubeconfig: Path | None = None
) -> int:
    """``promote`` or ``abort`` the running canary of ``name``."""
    namespace = namespace or default_namespace(kubeconfig)
    return _against_cluster(kubeconfig, lambda api: _canary_request(api, action, name, namespace))

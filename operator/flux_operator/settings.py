"""All operator settings: one pydantic object, built in ``main()`` from the command line and
``FLUXSERVE_OPERATOR_*`` environment variables (a flag wins over its variable).

Every field is a flag: ``resync_seconds`` is ``--resync-seconds`` and
``FLUXSERVE_OPERATOR_RESYNC_SECONDS``; the fields of a group are prefixed with its name
(``retry.attempts`` is ``--retry-attempts``): :mod:`flux_contract.flags`, the server's
convention too. Nothing here is read at import time, and
nothing here imports kopf or kubernetes (``--help`` works without the ``operator`` extra).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flux_contract.flags import (
    Flag,
    FlagError,
    add_flag,
    flags,
    help_text,
    settings_of,
)

ENV_PREFIX = "FLUXSERVE_OPERATOR_"


class RetrySettings(BaseModel):
    """Retries of API calls that may clear up (409 conflict, 429, 5xx, connection errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(
        default=6, ge=1, description="Tries of one API call before the reconciliation gives up."
    )
    first_delay: float = Field(
        default=0.5, gt=0, description="Seconds before the second try; doubled each time."
    )
    max_delay: float = Field(
        default=10.0, gt=0, description="Longest wait between tries, in seconds."
    )


class OperatorSettings(BaseModel):
    """How the operator runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = Field(
        default=(),
        description="Watch this namespace (repeatable; the variable takes a comma-separated "
        "list); none: all namespaces.",
        json_schema_extra={"flag": "--namespace"},
    )
    peering: str | None = Field(
        default=None, description="kopf peering name for leader election; unset: standalone."
    )
    priority: int | None = Field(
        default=None,
        ge=0,
        description="Priority among peers (the highest live one acts); unset: a hash of the "
        "peer identity. Peers must differ: kopf pauses every operator when two share the top.",
    )
    identity: str | None = Field(
        default=None,
        description="Name among peers; unset: the pod name ($POD_ID), else one unique to "
        "the process.",
    )
    health_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Liveness endpoint http://0.0.0.0:PORT/healthz (0: off).",
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file; unset: $KUBECONFIG, ~/.kube/config, then in-cluster.",
    )
    log_format: Literal["json", "plain"] = Field(
        default="json",
        description="json: one Elastic Common Schema document a line (see deploy/elk); "
        "plain: kopf's text, for a terminal.",
    )
    verbose: bool = Field(default=False, description="Debug logging.")
    retry: RetrySettings = Field(default_factory=lambda: RetrySettings())
    api_threads: int = Field(
        default=16, ge=1, description="Threads for blocking Kubernetes API calls."
    )
    resync_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Reconcile every resource this often, events or not (repairs children "
        "changed behind the operator's back); 0: off.",
    )
    progress_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Read each running FluxLoRATraining's progress from its trainer's log "
        "this often; 0: off (the progress moves when the Job ends).",
    )
    watch_timeout_seconds: int = Field(
        default=600,
        ge=1,
        description="Server-side watch timeout (kopf reconnects from the last resourceVersion).",
    )


class SettingsError(ValueError):
    """A flag or variable with a value the operator cannot start with."""


def options(model: type[BaseModel] = OperatorSettings) -> Iterator[Flag]:
    """Every setting, groups flattened: the one list flags, variables and docs come from."""
    return flags(model, ENV_PREFIX)


def describe_default(option: Flag) -> str:
    """The default as a user would type it."""
    value = option.default
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add a flag for every setting (defaults suppressed: an absent flag leaves the
    variable or the default to decide)."""
    for option in options():
        if option.is_multi:
            metavar: str | None = "NAME"
        else:
            metavar = None if option.choices else option.dest.rsplit("_", 1)[-1].upper()
        add_flag(parser, option, help_text(option, describe_default(option)), metavar)


def settings_from(
    args: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> OperatorSettings:
    """Settings from parsed flags (``dest`` → value) over ``environ`` over the defaults.

    Raises :class:`SettingsError` naming the flag, the variable and the limit.
    """
    try:
        return settings_of(OperatorSettings, ENV_PREFIX, args, environ or {})
    except FlagError as exc:
        raise SettingsError(str(exc)) from None


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorSettings:
    """Settings from ``argv`` (the ``run`` flags) over ``environ`` over the defaults."""
    parser = argparse.ArgumentParser(prog="python -m flux_operator run")
    add_arguments(parser)
    return settings_from(vars(parser.parse_args(list(argv or []))), environ)

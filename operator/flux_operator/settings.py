"""All operator settings: one pydantic object, built in ``main()`` from the command line and
``FLUXSERVE_OPERATOR_*`` environment variables (a flag wins over its variable).

Every field is a flag: ``resync_seconds`` is ``--resync-seconds`` and
``FLUXSERVE_OPERATOR_RESYNC_SECONDS``; the fields of a group are prefixed with its name
(``retry.attempts`` is ``--retry-attempts``). Nothing here is read at import time, and
nothing here imports kopf or kubernetes (``--help`` works without the ``operator`` extra).
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class _Option(typing.NamedTuple):
    path: tuple[str, ...]  # ("retry", "attempts")
    annotation: Any
    field: Any

    @property
    def dest(self) -> str:
        return "_".join(self.path)

    @property
    def flag(self) -> str:
        extra = self.field.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
            return str(extra["flag"])
        return "--" + self.dest.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def options(
    model: type[BaseModel] = OperatorSettings, prefix: tuple[str, ...] = ()
) -> Iterator[_Option]:
    """Every setting, groups flattened: the one list flags, variables and docs come from."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from options(annotation, (*prefix, name))
        else:
            yield _Option((*prefix, name), annotation, field)


def _default(option: _Option) -> Any:
    return option.field.get_default(call_default_factory=True)


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_multi(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _choices(annotation: Any) -> tuple[str, ...] | None:
    if typing.get_origin(annotation) is Literal:
        return tuple(typing.get_args(annotation))
    return None


def describe_default(option: _Option) -> str:
    """The default as a user would type it."""
    value = _default(option)
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
        help_text = (
            f"{option.field.description or ''} "
            f"[env {option.env}] (default: {describe_default(option)})"
        ).replace("%", "%%")
        common: dict[str, Any] = {
            "dest": option.dest,
            "help": help_text,
            "default": argparse.SUPPRESS,
        }
        if _is_bool(option.annotation):
            parser.add_argument(option.flag, action=argparse.BooleanOptionalAction, **common)
        elif _is_multi(option.annotation):
            parser.add_argument(option.flag, action="append", metavar="NAME", **common)
        else:
            choices = _choices(option.annotation)
            metavar = None if choices else option.dest.rsplit("_", 1)[-1].upper()
            parser.add_argument(option.flag, choices=choices, metavar=metavar, **common)


def _bool_env(value: str, option: _Option) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{option.env}={value!r} is not a boolean (use true or false)")


def settings_from(
    args: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> OperatorSettings:
    """Settings from parsed flags (``dest`` → value) over ``environ`` over the defaults.

    Raises :class:`SettingsError` naming the flag, the variable and the limit.
    """
    environ = environ or {}
    values: dict[str, Any] = {}
    by_location: dict[tuple[str, ...], _Option] = {}
    for option in options():
        by_location[option.path] = option
        if option.dest in args:
            value: Any = args[option.dest]
        elif option.env in environ:
            raw = environ[option.env]
            if _is_bool(option.annotation):
                value = _bool_env(raw, option)
            elif _is_multi(option.annotation):
                value = [part.strip() for part in raw.split(",") if part.strip()]
            else:
                value = raw
        else:
            continue
        target = values
        for part in option.path[:-1]:
            target = target.setdefault(part, {})
        target[option.path[-1]] = value
    try:
        return OperatorSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(p) for p in error["loc"])
            # The longest known prefix: an item of a list is reported as its flag.
            known = next(
                (by_location[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in by_location),
                None,
            )
            where = f"{known.flag} / {known.env}" if known else ".".join(map(str, error["loc"]))
            problems.append(f"{where}: {error['msg']}")
        raise SettingsError("; ".join(problems)) from None


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorSettings:
    """Settings from ``argv`` (the ``run`` flags) over ``environ`` over the defaults."""
    parser = argparse.ArgumentParser(prog="python -m flux_operator run")
    add_arguments(parser)
    return settings_from(vars(parser.parse_args(list(argv or []))), environ)

"""A pydantic settings model as a command line and environment variables, the one way the
server (``FLUXSERVE_*``) and the operator (``FLUXSERVE_OPERATOR_*``) take their settings.

Every field ``max_batch_size`` is the flag ``--max-batch-size`` and the variable
``<PREFIX>MAX_BATCH_SIZE``; the fields of a group model are prefixed with its name
(``retry.attempts`` is ``--retry-attempts``); a field may name its own flag
(``json_schema_extra={"flag": "--namespace"}``). A flag wins over its variable, and a
validation error names both. Generic: it knows a model only through its fields, and each
side keeps its own fields, prefix and help.

It lives in the contract because the convention is one both sides rely on: the operator
writes the server's ``FLUXSERVE_*`` variables into the pods it renders.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class FlagError(ValueError):
    """A variable whose text cannot be the field's value (a boolean that is not one)."""


def flag_name(name: str) -> str:
    """The flag of a field (or of a group's field, ``retry_attempts``)."""
    return "--" + name.replace("_", "-")


class Flag(typing.NamedTuple):
    """One setting: a field of the model (or of one of its groups), its flag and variable."""

    path: tuple[str, ...]  # ("retry", "attempts")
    field: FieldInfo
    prefix: str  # of the variable, "FLUXSERVE_"

    @property
    def annotation(self) -> Any:
        return self.field.annotation

    @property
    def dest(self) -> str:
        return "_".join(self.path)

    @property
    def flag(self) -> str:
        extra = self.field.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
            return str(extra["flag"])
        return flag_name(self.dest)

    @property
    def env(self) -> str:
        return self.prefix + self.dest.upper()

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)

    @property
    def is_bool(self) -> bool:
        return self.annotation is bool

    @property
    def is_multi(self) -> bool:
        return typing.get_origin(self.annotation) is tuple

    @property
    def choices(self) -> tuple[str, ...] | None:
        if typing.get_origin(self.annotation) is Literal:
            return tuple(typing.get_args(self.annotation))
        return None


def flags(model: type[BaseModel], prefix: str, group: tuple[str, ...] = ()) -> Iterator[Flag]:
    """Every setting of ``model``, groups flattened: the one list the flags, the variables
    and the docs come from."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from flags(annotation, prefix, (*group, name))
        else:
            yield Flag((*group, name), field, prefix)


def help_text(flag: Flag, default: str | None) -> str:
    """The flag's description, its variable and (unless None) its default, as typed."""
    text = f"{flag.field.description or ''} [env {flag.env}]".strip()
    return text if default is None else f"{text} (default: {default})"


def add_flag(
    parser: argparse.ArgumentParser | Any, flag: Flag, help: str, metavar: str | None = None
) -> None:
    """The flag on ``parser``: a boolean as ``--x/--no-x``, a tuple repeatable, a literal
    as choices. No default: an absent flag leaves the variable or the default to decide."""
    common: dict[str, Any] = {
        "dest": flag.dest,
        "help": help.replace("%", "%%"),
        "default": argparse.SUPPRESS,
    }
    if flag.is_bool:
        parser.add_argument(flag.flag, action=argparse.BooleanOptionalAction, **common)
    elif flag.is_multi:
        parser.add_argument(flag.flag, action="append", metavar=metavar, **common)
    else:
        parser.add_argument(flag.flag, choices=flag.choices, metavar=metavar, **common)


def env_value(flag: Flag, raw: str) -> Any:
    """A variable's text as the field's raw value: several values comma separated, a
    boolean spelt true/false (1/0, yes/no, on/off). Raises :class:`FlagError`."""
    if flag.is_bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise FlagError(f"{flag.env}={raw!r} is not a boolean (use true or false)")
    if flag.is_multi:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def raw_values(
    every: Iterable[Flag], args: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, Any]:
    """The model's raw values (groups nested): the flags given (``dest`` → value), else
    their variables. Raises :class:`FlagError`."""
    values: dict[str, Any] = {}
    for flag in every:
        if flag.dest in args:
            value = args[flag.dest]
        elif flag.env in environ:
            value = env_value(flag, environ[flag.env])
        else:
            continue
        target = values
        for part in flag.path[:-1]:
            target = target.setdefault(part, {})
        target[flag.path[-1]] = value
    return values


def problems(error: ValidationError, every: Iterable[Flag]) -> str:
    """The validation errors in one line, each naming its flag and variable (an item of a
    list as its flag; a check of several fields by its message alone)."""
    by_path = {flag.path: flag for flag in every}
    found = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        loc = tuple(str(part) for part in item["loc"])
        if not loc:
            found.append(message)
            continue
        known = next((by_path[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in by_path), None)
        where = f"{known.flag} / {known.env}" if known else ".".join(loc)
        found.append(f"{where}: {message}")
    return "; ".join(found)


M = typing.TypeVar("M", bound=BaseModel)


def settings_of(
    model: type[M], prefix: str, args: Mapping[str, Any], environ: Mapping[str, str]
) -> M:
    """``model`` from the flags given (``dest`` → value) over ``environ`` over its
    defaults. Raises :class:`FlagError` in one line naming each bad flag and variable."""
    every = list(flags(model, prefix))
    values = raw_values(every, args, environ)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FlagError(problems(exc, every)) from None

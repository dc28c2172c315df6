"""A pydantic settings model as a command line and environment variables: every field
``max_batch_size`` is the flag ``--max-batch-size`` and the variable
``<PREFIX>MAX_BATCH_SIZE`` (a flag wins over its variable), and a validation error names
both. Generic: it knows the model only through its fields."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError


class FlagError(ValueError):
    """A variable whose text cannot be the field's value (a boolean that is not one)."""


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str, prefix: str) -> str:
    return prefix + name.upper()


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str) -> None:
    """One flag per field: booleans as ``--x/--no-x``, tuples repeatable, literals as
    choices; the help says the variable and the default."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        help_text = f"{field.description or ''} [env {env_name(name, prefix)}]".strip()
        if not field.is_required():
            help_text += f" (default: {field.default!r})"
        if annotation is bool:
            parser.add_argument(
                flag_name(name), dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif _is_multi(annotation):
            parser.add_argument(flag_name(name), dest=name, action="append", help=help_text)
        else:
            parser.add_argument(
                flag_name(name), dest=name, choices=_choices(annotation), help=help_text
            )


def flag_values(
    model: type[BaseModel], args: Mapping[str, Any], environ: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """The model's raw values: the flags given, else their variables (several values in
    one variable are comma separated). Raises :class:`FlagError`."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in args:
            values[name] = args[name]
            continue
        raw = environ.get(env_name(name, prefix))
        if raw is None:
            continue
        if field.annotation is bool:
            values[name] = _bool_env(raw, env_name(name, prefix))
        elif _is_multi(field.annotation):
            values[name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            values[name] = raw
    return values


def problems(error: ValidationError, prefix: str) -> str:
    """The validation errors in one line, each naming its flag and variable."""
    found = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            found.append(message)
            continue
        name = str(item["loc"][0])
        found.append(f"{flag_name(name)} / {env_name(name, prefix)}: {message}")
    return "; ".join(found)


def _is_multi(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _choices(annotation: Any) -> tuple[str, ...] | None:
    if typing.get_origin(annotation) is Literal:
        return tuple(typing.get_args(annotation))
    return None


def _bool_env(value: str, variable: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise FlagError(f"{variable}={value!r} is not a boolean (use true or false)")

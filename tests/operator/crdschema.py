"""Validate a custom resource the way the API server would: defaults, the structural
OpenAPI schema, then every CEL rule (``x-kubernetes-validations``) where it sits.

jsonschema checks the schema; cel-python evaluates the CEL rules. Errors are returned as
``(path, message)`` so a test can assert *why* a resource is rejected.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in ``default``s as the API server does (only inside objects that exist)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                if key not in schema.get("properties", {}):
                    value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


# Property names a rule must write as ``__name__`` (Kubernetes' CEL escaping).
_CEL_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
    "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
    "void", "while",
}  # fmt: skip


def _escaped(value: Any) -> Any:
    """The object as a rule sees it: reserved property names escaped, as the API server
    does (``namespace`` is ``self.__namespace__``)."""
    if not isinstance(value, dict):
        return value
    return {f"__{k}__" if k in _CEL_RESERVED else k: v for k, v in value.items()}


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        self_value = _escaped(value) if "properties" in schema else value
        result = program.evaluate({"self": celpy.json_to_cel(self_value)})
        if isinstance(result, Exception) or not bool(result):
            errors.append((path, rule["message"]))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in value.items():
            sub_schema = props.get(key) or (
                schema["additionalProperties"]
                if isinstance(schema.get("additionalProperties"), dict)
                else None
            )
            if sub_schema is not None:
                errors += _cel_errors(sub_schema, sub, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def _strict(schema: Any) -> Any:
    # kubectl's default field validation is Strict: unknown fields are errors, not pruned.
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        # OpenAPI v3.0's exclusive bounds are flags on minimum/maximum; Draft 7's are numbers.
        for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if out.get(flag) is True and bound in out:
                out[flag] = out.pop(bound)
            elif out.get(flag) is False:
                del out[flag]
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def validate(crd: dict[str, Any], resource: dict[str, Any]) -> list[tuple[str, str]]:
    """Errors the API server would report for ``resource`` (empty: accepted)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = apply_defaults(schema, copy.deepcopy(resource))
    validator = jsonschema.Draft7Validator(_strict(schema))
    errors = [
        ("." + ".".join(str(p) for p in err.absolute_path), err.message)
        for err in validator.iter_errors(obj)
    ]
    if errors:
        return errors  # the API server stops at schema errors too
    return _cel_errors(schema, obj, "")

"""The descriptions ``kubectl explain`` shows: each spec field's type, bounds and default
written into its description from the same structural-schema keys the API server
enforces (used by :mod:`flux_operator.crdgen`), so they cannot drift from them and a new
field gets its sentences without anyone writing them."""

from __future__ import annotations

import json
from typing import Any

_KEY_BOUNDS = "__key_bounds__"
"""Where a map's key bounds wait for its description (never left in the output)."""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _bounds(node: dict[str, Any]) -> list[str]:
    """The constraints of one schema node as sentences (``kubectl explain`` shows only
    descriptions), each from the key the API server enforces."""
    said = []
    for key, words in (
        ("enum", "One of"),
        ("minimum", "Minimum"),
        ("exclusiveMinimum", "Greater than"),
        ("maximum", "Maximum"),
        ("exclusiveMaximum", "Less than"),
        ("multipleOf", "Multiple of"),
        ("minLength", "Minimum length"),
        ("maxLength", "Maximum length"),
        ("pattern", "Pattern"),
        ("minItems", "Minimum items"),
        ("maxItems", "Maximum items"),
        ("minProperties", "Minimum entries"),
        ("maxProperties", "Maximum entries"),
    ):
        if key not in node:
            continue
        value = node[key]
        if key.startswith("exclusive"):
            continue  # said with its bound
        if key in ("minimum", "maximum") and node.get(f"exclusive{key.title()}") is True:
            words = "Greater than" if key == "minimum" else "Less than"
        if key == "enum":
            said.append(f"{words}: {', '.join(_json(v) for v in value)}.")
        elif key == "pattern":
            said.append(f"{words}: `{value}`.")
        else:
            said.append(f"{words}: {_json(value)}.")
    return said


def _type_name(node: dict[str, Any]) -> str:
    """The field's type as ``kubectl explain`` readers say it: ``list of string``,
    ``map of string to integer``, ``object``."""
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type_name(node.get('items') or {})}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of string to {_type_name(node['additionalProperties'])}"
    return str(kind)


def _document_bounds(node: dict[str, Any], required: bool = False, is_field: bool = False) -> None:
    """Append each field's type, bounds and default to its description, recursively: the
    sentences come from the same schema keys the API server enforces, so they cannot
    drift from them. A field without a default says whether it is required."""
    must = set(node.get("required") or ())
    for name, child in (node.get("properties") or {}).items():
        _document_bounds(child, name in must, is_field=True)
    said: list[str] = []
    keys = node.pop(_KEY_BOUNDS, None)
    if keys:
        said.append("Each key: " + " ".join(keys))
    for key, prefix in (("items", "Each item"), ("additionalProperties", "Each value")):
        inner = node.get(key)
        if not isinstance(inner, dict):
            continue
        _document_bounds(inner)
        if "properties" not in inner and inner.get("type") not in ("object", "array"):
            # A list or map of scalars: kubectl explain shows no node of its own for them.
            inner_bounds = _bounds(inner)
            if inner_bounds:
                said.append(f"{prefix}: " + " ".join(inner_bounds))
    if not is_field:
        if said and "description" in node:
            _describe(node, said)
        return
    said = [f"Type: {_type_name(node)}.", *said, *_bounds(node)]
    if "default" in node:
        said.append(f"Default: {_json(node['default'])}.")
    else:
        said.append("Required." if required else "Optional; no default.")
    _describe(node, said)


def _describe(node: dict[str, Any], sentences: list[str]) -> None:
    text = node.get("description", "").rstrip()
    if text and not text.endswith((".", ":", "?", "!")):
        text += "."
    node["description"] = " ".join([text, *sentences]).strip()

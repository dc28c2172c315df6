"""Log lines checked against the Elasticsearch index template of deploy/elk, as
Elasticsearch would index them, since no Elasticsearch server runs here: every field of
a line must be in the template's mappings, with a value its type accepts.

Dotted keys are expanded first (``"log.level"`` is ``log`` → ``level``), as Filebeat's
``expand_keys`` and the ingest pipeline's ``dot_expander`` do. A ``flattened`` field takes
any object; the types' rules are Elasticsearch's for JSON values, strictly: a ``long``
takes whole numbers only (Elasticsearch would truncate 1.5 without a word), a ``date``
an ISO 8601 string or epoch milliseconds.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ELK = ROOT / "deploy" / "elk"
TEMPLATE = ELK / "index-template.json"

_KEYWORDS = {"keyword", "constant_keyword", "wildcard"}
_TEXTS = {"text", "match_only_text"}
_INTEGERS = {"long", "integer", "short", "byte", "unsigned_long"}
_FLOATS = {"float", "double", "half_float", "scaled_float"}


def mappings() -> dict[str, Any]:
    """The template's mappings (its ``template.mappings``)."""
    mapping: dict[str, Any] = json.loads(TEMPLATE.read_text("utf-8"))["template"]["mappings"]
    return mapping


def field_types(node: dict[str, Any] | None = None, prefix: str = "") -> dict[str, str]:
    """Every mapped leaf field, dotted, with its type (``object`` nodes walked)."""
    node = node if node is not None else mappings()
    out: dict[str, str] = {}
    for name, spec in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out.update(field_types(spec, f"{path}."))
        else:
            out[path] = spec["type"]
    return out


def expand(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with dotted keys made objects, recursively; a clash is a ValueError."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        value = expand(value) if isinstance(value, dict) else value
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {part} is both a value and an object")
        if leaf in node and isinstance(node[leaf], dict) and isinstance(value, dict):
            node[leaf] = {**node[leaf], **value}
        elif leaf in node:
            raise ValueError(f"{key}: given twice")
        else:
            node[leaf] = value
    return out


def _accepts(kind: str, value: Any) -> bool:
    if kind in _KEYWORDS:
        return isinstance(value, (str, int, float, bool))
    if kind in _TEXTS:
        return isinstance(value, str)
    if kind in _INTEGERS:
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if kind in _FLOATS:
        return not isinstance(value, bool) and isinstance(value, (int, float))
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        if isinstance(value, int) and not isinstance(value, bool):
            return True
        try:
            datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return False
        return True
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    raise AssertionError(f"the checker does not know the type {kind!r}")


def _leaf_problems(path: str, kind: str, value: Any) -> list[str]:
    if value is None:
        return []  # Elasticsearch indexes nothing for null
    if kind == "flattened":
        return [] if isinstance(value, dict) else [f"{path}: a flattened field takes an object"]
    if isinstance(value, list):
        return [p for item in value for p in _leaf_problems(path, kind, item)]
    if isinstance(value, dict):
        return [f"{path}: an object where the mappings have a {kind}"]
    if not _accepts(kind, value):
        return [f"{path}: {value!r} is not a {kind}"]
    return []


def _problems(value: dict[str, Any], node: dict[str, Any], prefix: str) -> list[str]:
    problems: list[str] = []
    properties = node.get("properties", {})
    for key, item in value.items():
        path = f"{prefix}{key}"
        spec = properties.get(key)
        if spec is None:
            problems.append(f"{path}: not in the mappings")
        elif "properties" in spec:
            if isinstance(item, dict):
                problems += _problems(item, spec, f"{path}.")
            elif item is not None:
                problems.append(f"{path}: {item!r} where the mappings have an object")
        else:
            problems += _leaf_problems(path, spec["type"], item)
    return problems


def line_problems(line: str) -> list[str]:
    """What keeps one log line from being indexed as the template maps it; [] when it
    is an ECS document the template takes whole."""
    try:
        doc = expand(json.loads(line))
    except ValueError as exc:
        return [f"not a JSON document: {exc}"]
    problems = _problems(doc, mappings(), "")
    if "@timestamp" not in doc:
        problems.append("@timestamp: missing")
    if not doc.get("ecs", {}).get("version"):
        problems.append("ecs.version: missing")
    if "message" not in doc:
        problems.append("message: missing")
    if not doc.get("log", {}).get("level"):
        problems.append("log.level: missing")
    return problems


def flat(doc: dict[str, Any]) -> dict[str, Any]:
    """An ECS document with its fields named by their dotted paths, as Kibana names
    them (``fluxserve.detail.http_port``, ``fluxserve.audit.params.width``)."""
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(expand(doc), "")
    return out

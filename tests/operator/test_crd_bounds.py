"""Bounds everywhere: every leaf, list and map a user writes in a CRD (the spec of each
resource, whatever field is added to its model later) has bounds the API server enforces,
and its description (all ``kubectl explain`` shows) states its type, bounds and default.

A string needs a maximum length (or an enum), a number both a minimum and a maximum, a
list a maximum of items, a map a maximum of entries; then the same for what they hold.
The status is the operator's own writing and is not walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from flux_operator.crd_descriptions import _document_bounds
from flux_operator.crdgen import _model_schema, crd_files

DEFAULT_WORDS = ("Default: ", "Required.", "Optional; no default.")


def _crds() -> dict[str, dict[str, Any]]:
    import yaml

    return {name: yaml.safe_load(text) for name, text in crd_files().items()}


def _fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field under ``node`` (by its dotted path), then the items and values of its
    lists and maps (``[]``, ``{}``)."""
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _fields(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _fields(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _fields(node["additionalProperties"], f"{path}{{}}")


def _unbounded(node: dict[str, Any]) -> str | None:
    """What bound the node lacks (for its kind), or None: strings, numbers, lists, maps
    and what the lists and maps hold."""
    kind = node.get("type")
    if "enum" in node or kind == "boolean":
        return None
    if kind == "string" and "maxLength" not in node:
        return "a string without maxLength"
    if kind in ("integer", "number") and not {"minimum", "maximum"} <= node.keys():
        return f"an {kind} without both minimum and maximum"
    if kind == "array":
        return "a list without maxItems" if "maxItems" not in node else _unbounded(node["items"])
    inner = node.get("additionalProperties")
    if kind == "object" and isinstance(inner, dict):
        return "a map without maxProperties" if "maxProperties" not in node else _unbounded(inner)
    if kind == "object" and "properties" not in node:
        return "an object without fields (free-form)"
    return None


def problems(spec: dict[str, Any], path: str = "spec") -> list[str]:
    """Each field of a spec schema without its bounds, or without its type, bounds and
    default stated in its description."""
    found = []
    for where, node in _fields(spec, path):
        if where.endswith(("[]", "}")):
            continue  # an item or a value: its bounds are said on its list or map
        lacking = _unbounded(node)
        if lacking:
            found.append(f"{where}: {lacking}")
        description = node.get("description", "")
        if "Type: " not in description:
            found.append(f"{where}: no 'Type:' in its description")
        if not any(word in description for word in DEFAULT_WORDS):
            found.append(f"{where}: its description says no default")
    return found


@pytest.mark.parametrize("name", sorted(_crds()))
def test_every_spec_field_has_bounds_and_says_them(name: str) -> None:
    crd = _crds()[name]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert problems(spec) == []
    assert sum(1 for _ in _fields(spec, "spec")) > 20


def test_the_issues_fields_say_their_bounds() -> None:
    crd = _crds()["fluxserve.dev_fluxdeployments.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    values = props["experiments"]["items"]["properties"]["audience"]["properties"]["values"]
    assert "Each item: Minimum length: 1. Maximum length: 256." in values["description"]
    assert "Maximum items: 100" in values["description"]
    hostnames = props["gateway"]["properties"]["hostnames"]["description"]
    assert "Type: list of string." in hostnames and "Maximum length: 253." in hostnames
    peer = props["networkPolicy"]["properties"]["from"]["items"]["properties"]
    for selector in ("namespaceSelector", "podSelector"):
        said = peer[selector]["description"]
        assert "Type: map of string to string." in said, said
        assert "Each key: Maximum length: 317." in said and "Maximum entries: 16." in said
    names = props["networkPolicy"]["properties"]["metricsFrom"]["items"]["properties"]
    for field, node in names.items():
        assert "Type: " in node["description"], field
        assert _unbounded(node) is None, field
    release = props["release"]["description"]
    assert "Type: string." in release and "Maximum length: 128." in release
    assert release.endswith("Required.")


class _Unbounded(BaseModel):
    name: str = Field(description="A name.")
    count: int = Field(default=1, ge=0, description="How many.")
    tags: list[str] = Field(default_factory=list, max_length=4, description="Tags.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")


def test_the_walk_fails_on_a_field_without_bounds() -> None:
    # A model as a new spec part might be written: each missing bound is named.
    schema = _model_schema(_Unbounded)
    _document_bounds(schema)
    assert problems(schema) == [
        "spec.name: a string without maxLength",
        "spec.count: an integer without both minimum and maximum",
        "spec.tags: a string without maxLength",
        "spec.labels: a map without maxProperties",
    ]
    # The generated sentences: type, bounds, default or whether it is required.
    assert schema["properties"]["count"]["description"] == (
        "How many. Type: integer. Minimum: 0. Default: 1."
    )
    assert schema["properties"]["name"]["description"].endswith("Type: string. Required.")

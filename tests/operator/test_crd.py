"""The CRD: current with the models, a valid CustomResourceDefinition, and it accepts the
good examples and rejects each bad one for the reason it names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from crdschema import validate

from flux_operator import crdgen
from flux_operator.spec import FluxDeployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).parent / "examples"
CRD_PATH = ROOT / "crds" / crdgen.CRD_FILE_NAME
K8S_VERSION = "1.33.0"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <reason>'"
    return first.removeprefix("# expect: ")


@pytest.fixture(scope="module")
def crd() -> dict:
    return _load(CRD_PATH)


def test_crd_file_is_current(tmp_path: Path) -> None:
    assert crdgen.main([str(tmp_path)]) == 0
    fresh = (tmp_path / crdgen.CRD_FILE_NAME).read_text()
    assert CRD_PATH.read_text() == fresh, "crds/ is stale: run `make crds`"
    assert crdgen.main([str(ROOT / "crds"), "--check"]) == 0


def test_check_flags_a_stale_file(tmp_path: Path) -> None:
    (tmp_path / crdgen.CRD_FILE_NAME).write_text("stale\n")
    assert crdgen.main([str(tmp_path), "--check"]) == 1


def test_crd_is_a_valid_custom_resource_definition(crd: dict) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_crd_names_and_subresources(crd: dict) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "fluxdeployments.fluxserve.dev"
    assert spec["names"]["shortNames"] == ["fxd"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    assert "status" in version["subresources"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Release", "Ready", "Phase", "Canary", "Age"} <= columns
    canary = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Canary")
    assert canary["jsonPath"] == ".status.canary.summary"


def _no_unstructural(node: dict, path: str) -> None:
    """Every schema node has a type and none uses what structural schemas forbid."""
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "patternProperties", "title"):
        assert banned not in node, f"{banned} at {path}: not a structural schema"
    assert node.get("type"), f"no type at {path}"
    for name, sub in node.get("properties", {}).items():
        _no_unstructural(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _no_unstructural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _no_unstructural(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(crd: dict) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in ("spec", "status"):
        _no_unstructural(schema["properties"][name], name)


_ITERATION = re.compile(r"self\.(\w+)\.(?:all|exists|exists_one|map|filter)\(")


def _bounded(node: dict) -> bool:
    return node.get("type") != "string" or "maxLength" in node or "enum" in node


def _rules(node: dict, path: str) -> Iterator[tuple[dict, str, str]]:
    for rule in node.get("x-kubernetes-validations", []):
        yield node, path, rule["rule"]
    for name, sub in node.get("properties", {}).items():
        yield from _rules(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _rules(node[key], f"{path}[]")


def test_iterating_cel_rules_read_only_bounded_data(crd: dict) -> None:
    """The API server estimates each rule's cost from maxItems/maxProperties/maxLength
    (an unbounded string counts as the whole 3 MiB request) and refuses a CRD whose rule
    could cost too much. A rule that loops over a list or map must find every count and
    every string it may compare there bounded."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checked = 0
    for node, path, rule in _rules(schema, ""):
        for field in _ITERATION.findall(rule):
            target = node["properties"][field]
            where = f"{path}.{field} (rule {rule!r})"
            assert "maxItems" in target or "maxProperties" in target, f"unbounded {where}"
            element = target.get("items") or target.get("additionalProperties")
            assert _bounded(element), f"unbounded strings in {where}"
            for name, sub in element.get("properties", {}).items():
                assert _bounded(sub), f"{where}: {name} has no maxLength"
            checked += 1
    assert checked >= 3  # the LoRA and preset rules on spec


@pytest.mark.parametrize("path", sorted((EXAMPLES / "good").glob("*.yaml")), ids=lambda p: p.stem)
def test_good_examples_are_accepted(crd: dict, path: Path) -> None:
    resource = _load(path)
    assert validate(crd, resource) == []
    FluxDeployment.model_validate(resource)  # and the operator reads it the same way


@pytest.mark.parametrize("path", sorted((EXAMPLES / "bad").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_examples_are_rejected_for_their_reason(crd: dict, path: Path) -> None:
    errors = validate(crd, _load(path))
    expected = _expectation(path)
    assert errors, f"{path.name} was accepted"
    assert any(expected in message for _, message in errors), errors


@pytest.mark.parametrize("path", sorted((EXAMPLES / "bad").glob("*.yaml")), ids=lambda p: p.stem)
def test_operator_models_reject_what_the_crd_rejects(path: Path) -> None:
    # Where the CEL rule lives only in the CRD, the operator's own checks must agree, so a
    # resource that slipped past an older CRD still becomes Degraded, not a crash.
    from flux_operator.validation import spec_problems

    resource = _load(path)
    problems = spec_problems(resource)
    assert problems, f"{path.name} passes the operator's checks"


BOUND_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "default",
)


def _fields(node: dict, path: str) -> Iterator[tuple[str, dict]]:
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _fields(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _fields(node[key], f"{path}[]")


def test_explain_shows_each_fields_bounds_and_default(crd: dict) -> None:
    """`kubectl explain fxd.spec...` prints descriptions only: every bound the API server
    enforces, and the default, is in the field's description too."""
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    checked = 0
    for path, node in _fields(spec, "spec"):
        description = node.get("description", "")
        for key in BOUND_KEYS:
            if key not in node or not description:
                continue
            values = node[key] if key == "enum" else [node[key]]
            for value in values:
                shown = value if isinstance(value, str) else json.dumps(value)
                assert shown.replace(", ", ",") in description.replace(", ", ","), (
                    path,
                    key,
                    value,
                )
                checked += 1
    assert checked > 50


def test_the_bounds_in_descriptions_come_from_the_models(crd: dict) -> None:
    from flux_operator.spec import BatchingSpec

    field = BatchingSpec.model_fields["max_batch_size"]
    low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
    high = next(m.le for m in field.metadata if hasattr(m, "le"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    description = spec["properties"]["batching"]["properties"]["maxBatchSize"]["description"]
    assert description.endswith(f"Minimum: {low}. Maximum: {high}. Default: {field.default}."), (
        description
    )
    release = spec["properties"]["release"]["description"]
    assert "Pattern: `^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`." in release
    level = spec["properties"]["logLevel"]["description"]
    assert 'One of: "' in level and "Default: " in level

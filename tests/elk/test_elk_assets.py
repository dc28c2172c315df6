"""deploy/elk against the code that writes the logs, with no Elastic stack here: the index
template maps every field the server, its audit log and the operator can write, with the
type the code declares; the ingest pipeline, the pods' Filebeat hints and Filebeat's
settings name one pipeline and one data stream; the Kibana objects parse, their
references resolve within the file, and every field they chart is mapped and can be
aggregated."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import pytest
import yaml
from ecs_mappings import ELK, ROOT, TEMPLATE, field_types

from flux_operator import logs as operator_logs
from flux_operator.render import Owner, render_all
from flux_operator.render.pod import LOG_HINT_ANNOTATIONS
from flux_operator.spec import FluxDeployment
from flux_server import logs as server_logs
from flux_server.admission.audit_ecs import AUDIT_FIELDS

PIPELINE = ELK / "ingest-pipeline.json"
SAVED_OBJECTS = ELK / "kibana-saved-objects.ndjson"
FILEBEAT = ELK / "filebeat.yml"
AGGREGATABLE = {"keyword", "constant_keyword", "long", "float", "double", "boolean", "date"}


def _template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(TEMPLATE.read_text("utf-8"))
    return template


def _saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAVED_OBJECTS.read_text("utf-8").splitlines() if line]


def _declared() -> dict[str, str]:
    """Every ECS name the code writes, with the type it declares for it."""
    declared: dict[str, str] = {}
    for table, derived in (
        (server_logs.FIELDS, server_logs.DERIVED),
        (operator_logs.FIELDS, operator_logs.DERIVED),
    ):
        declared.update(dict(table.values()))
        declared.update(derived)
    declared.update(AUDIT_FIELDS)
    return declared


def test_the_template_is_a_data_stream_template_with_its_pipeline() -> None:
    template = _template()
    assert template["data_stream"] == {}
    assert field_types()["@timestamp"] == "date"
    settings = template["template"]["settings"]
    assert settings["index.default_pipeline"] == "fluxserve-logs"
    assert template["priority"] > 100, "must win over Elasticsearch's built-in logs-*-*"


@pytest.mark.parametrize("name", sorted(_declared()))
def test_every_field_the_code_writes_is_mapped_with_its_type(name: str) -> None:
    types = field_types()
    assert name in types, f"{name} is written by the code but not in {TEMPLATE.name}"
    assert types[name] == _declared()[name], f"{name}: the code says {_declared()[name]}"


def test_the_pipeline_names_and_writes_only_what_is_mapped() -> None:
    pipeline = json.loads(PIPELINE.read_text("utf-8"))
    known = {"set", "json", "dot_expander", "remove", "append"}
    types = field_types()
    for processor in [*pipeline["processors"], *pipeline["on_failure"]]:
        ((kind, options),) = processor.items()
        assert kind in known, f"unexpected processor {kind}"
        if kind in ("set", "append"):
            assert options["field"] in types, f"the pipeline writes {options['field']}, unmapped"
    written = {p["set"]["field"] for p in pipeline["processors"] if "set" in p}
    assert types["event.ingested"] == "date" and "event.ingested" in written


def test_pods_and_filebeat_name_the_template_s_pipeline_and_data_stream() -> None:
    pipeline = _template()["template"]["settings"]["index.default_pipeline"]
    assert LOG_HINT_ANNOTATIONS["co.elastic.logs/pipeline"] == pipeline
    # The hints Elastic's ecs-logging guide gives for pods that log ECS JSON.
    for hint in ("overwrite_keys", "add_error_key", "expand_keys"):
        assert LOG_HINT_ANNOTATIONS[f"co.elastic.logs/json.{hint}"] == "true"
    # Rendered on the server's pods...
    example = ROOT / "tests" / "operator" / "examples" / "good" / "minimal-hub.yaml"
    fd = FluxDeployment.model_validate(yaml.safe_load(example.read_text("utf-8")))
    (deployment,) = [
        o
        for o in render_all(Owner(fd.metadata["name"], "studio"), fd.spec)
        if o["kind"] == "Deployment"
    ]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert LOG_HINT_ANNOTATIONS.items() <= annotations.items()
    # ... and by the chart on the operator's.
    chart = (ROOT / "charts/fluxserve-operator/templates/deployment.yaml").read_text("utf-8")
    for key, value in LOG_HINT_ANNOTATIONS.items():
        assert f'"{key}" "{value}"' in chart, key
    # Filebeat writes to a data stream the template describes, and reads the hints.
    filebeat = yaml.safe_load(FILEBEAT.read_text("utf-8"))
    index = filebeat["output.elasticsearch"]["index"]
    assert any(fnmatch.fnmatch(index, p) for p in _template()["index_patterns"]), index
    (provider,) = filebeat["filebeat.autodiscover"]["providers"]
    assert provider["hints.enabled"] is True and provider["type"] == "kubernetes"


def test_the_kibana_objects_parse_and_their_references_resolve() -> None:
    objects = _saved_objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects), "an id is given twice"
    assert {o["type"] for o in objects} == {"index-pattern", "lens", "dashboard"}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']}: {ref} is not in the file"
    (view,) = [o for o in objects if o["type"] == "index-pattern"]
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    pattern = view["attributes"]["title"]
    assert pattern in _template()["index_patterns"]


def _lens_fields(obj: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The fields a Lens object charts, and those its query filters on."""
    state = obj["attributes"]["state"]
    charted = set()
    for layer_id, layer in state["datasourceStates"]["formBased"]["layers"].items():
        names = {r["name"] for r in obj["references"]}
        assert f"indexpattern-datasource-layer-{layer_id}" in names, obj["id"]
        assert set(layer["columnOrder"]) == set(layer["columns"]), obj["id"]
        charted |= {c["sourceField"] for c in layer["columns"].values()}
    charted.discard("___records___")  # Lens's name for a count of documents
    queried = set(re.findall(r"([@\w][\w.]*)\s*:", state["query"]["query"]))
    return charted, queried


def test_the_kibana_charts_read_mapped_fields_the_logs_write() -> None:
    types = field_types()
    lenses = [o for o in _saved_objects() if o["type"] == "lens"]
    assert {o["id"] for o in lenses} == {
        "fluxserve-requests-by-preset-arm",
        "fluxserve-refusals-by-reason",
        "fluxserve-latency-by-release",
    }
    for obj in lenses:
        charted, queried = _lens_fields(obj)
        for name in charted:
            assert types.get(name) in AGGREGATABLE, f"{obj['id']} charts {name}: {types.get(name)}"
        for name in queried:
            assert name in types, f"{obj['id']} queries {name}, which is not mapped"
    charted = {name for obj in lenses for name in _lens_fields(obj)[0]}
    assert {"fluxserve.preset", "fluxserve.arm", "event.reason", "fluxserve.release"} <= charted
    assert "fluxserve.latency_ms" in charted


def test_the_dashboard_shows_every_chart_through_a_reference() -> None:
    objects = _saved_objects()
    (dashboard,) = [o for o in objects if o["type"] == "dashboard"]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dashboard["references"]}
    shown = set()
    for panel in panels:
        ref = refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]
        shown.add(ref["id"])
    assert shown == {o["id"] for o in objects if o["type"] == "lens"}
    json.loads(dashboard["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def test_readme_says_how_to_load_them() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    for path in (TEMPLATE, PIPELINE, SAVED_OBJECTS, FILEBEAT):
        assert str(path.relative_to(ROOT)) in readme, path.name

"""spec.experiments from the operator's side: the CRD accepts the experiment and Unicode
preset names, plan() makes each bad experiment Degraded naming the field, the presets
ConfigMap carries the experiment (valid keys, decodable names, weights in the hash), and
the server's PresetStore reads what the operator renders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crdschema import validate

from flux_contract.experiments import EXPERIMENTS_FILE, experiments_from_file
from flux_contract.names import key_to_name
from flux_contract.presets import presets_from_files, presets_to_files
from flux_operator import crdgen
from flux_operator.cli import main as cli_main
from flux_operator.reconcile import Children, plan
from flux_operator.render import Owner, desired_revision, render_all
from flux_operator.render.naming import content_hash
from flux_operator.spec import FluxDeployment, FluxDeploymentSpec
from flux_server.requests.presets_store import PresetStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).parent / "examples" / "good" / "ab-experiment.yaml"
K8S_VERSION = "1.33.0"
NOW = "2026-01-01T00:00:00Z"
OWNER = Owner(name="flux-styles", namespace="studio", uid="6f1c0a52-0000-4000-8000-0000000000ab")


def _doc() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text("utf-8"))


def _spec(doc: dict[str, Any] | None = None) -> FluxDeploymentSpec:
    return FluxDeployment.model_validate(doc or _doc()).spec


def _presets_config_map(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [o for o in objects if "-presets-" in o["metadata"]["name"]]
    return cm


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / crdgen.CRD_FILE_NAME).read_text("utf-8"))


# -- the CRD ---------------------------------------------------------------------------


def test_the_issue_example_applies(crd: dict[str, Any]) -> None:
    assert validate(crd, _doc()) == []


@pytest.mark.parametrize("name", ["水墨", "Café", "ink-wash", "ukiyo.e_2", "सुमि"])
def test_unicode_preset_names_are_accepted(crd: dict[str, Any], name: str) -> None:
    doc = _doc()
    doc["spec"]["stylePresets"][name] = {"promptTemplate": "{prompt}"}
    assert validate(crd, doc) == []
    assert _spec(doc).style_presets[name].prompt_template == "{prompt}"


@pytest.mark.parametrize("name", ["a/b", "ink wash", "a=b", "tab\there", "x" * 64, ""])
def test_preset_names_the_schema_can_refuse_are_refused(crd: dict[str, Any], name: str) -> None:
    doc = _doc()
    doc["spec"]["stylePresets"][name] = {"promptTemplate": "{prompt}"}
    messages = [message for _, message in validate(crd, doc)]
    assert any("stylePresets keys must be at most 63 characters" in m for m in messages), messages


def _bad(change: str) -> dict[str, Any]:
    doc = _doc()
    experiment = doc["spec"]["experiments"][0]
    if change == "weight-negative":
        experiment["arms"][0]["weight"] = -1
    elif change == "one-arm":
        experiment["arms"] = experiment["arms"][:1]
    elif change == "duplicate-arms":
        experiment["arms"][1]["name"] = "control"
    elif change == "duplicate-experiments":
        doc["spec"]["experiments"].append({**copy.deepcopy(experiment), "preset": "水墨"})
    elif change == "arm-name-slash":
        experiment["arms"][2]["name"] = "ink/wash"
    elif change == "audience-header":
        experiment["audience"]["header"] = "X Customer"
    elif change == "unknown-field":
        experiment["weights"] = [50, 50]
    return doc


SCHEMA_REFUSES = {
    "weight-negative": "less than the minimum of 0",
    "one-arm": "is too short",
    "duplicate-arms": "arm names must be unique in an experiment",
    "duplicate-experiments": "experiment names must be unique",
    "arm-name-slash": "does not match",
    "audience-header": "does not match",
    "unknown-field": "Additional properties are not allowed",
}


@pytest.mark.parametrize("change", sorted(SCHEMA_REFUSES))
def test_the_schema_refuses_what_it_can_say(crd: dict[str, Any], change: str) -> None:
    messages = [message for _, message in validate(crd, _bad(change))]
    assert any(SCHEMA_REFUSES[change] in m for m in messages), messages


# -- plan(): what only the operator can judge is Degraded, naming the field -------------


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": OWNER.name,
            "namespace": OWNER.namespace,
            "uid": OWNER.uid,
            "generation": 1,
        },
        "spec": spec,
    }


def _degraded(spec: dict[str, Any]) -> str:
    result = plan(_body(spec), Children(), NOW)
    assert result.revision is None and result.spec is None  # nothing is applied
    condition = next(c for c in result.status.conditions if c.type == "Degraded")
    assert condition.status == "True" and condition.reason == "InvalidSpec"
    assert result.status.phase == "Degraded"
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidSpec")]
    return condition.message


def _experiment_spec(**changes: Any) -> dict[str, Any]:
    spec = _doc()["spec"]
    spec["experiments"][0].update(changes)
    return spec


def test_an_arm_naming_an_unknown_preset_is_degraded(crd: dict[str, Any]) -> None:
    spec = _experiment_spec()
    spec["experiments"][0]["arms"][2]["preset"] = "sumi-e"
    assert validate(crd, {**_doc(), "spec": spec}) == []  # the schema cannot know
    assert _degraded(spec) == "spec.experiments[0].arms[2].preset: no style preset named 'sumi-e'"


def test_weights_not_summing_to_100_are_degraded(crd: dict[str, Any]) -> None:
    spec = _experiment_spec()
    spec["experiments"][0]["arms"][0]["weight"] = 40
    assert validate(crd, {**_doc(), "spec": spec}) == []
    assert _degraded(spec) == (
        "spec.experiments[0].arms: weights must sum to 100, got 90 "
        "(control=40, impressionist=30, ink=20)"
    )


def test_an_experiment_on_an_unknown_preset_is_degraded() -> None:
    message = _degraded(_experiment_spec(preset="cartoon"))
    assert message == "spec.experiments[0].preset: no style preset named 'cartoon'"


def test_two_experiments_on_one_preset_are_degraded() -> None:
    spec = _experiment_spec()
    spec["experiments"].append({**copy.deepcopy(spec["experiments"][0]), "name": "second"})
    assert _degraded(spec) == (
        "spec.experiments[1].preset: experiments[0] already runs on 'realistic'; "
        "one experiment per preset"
    )


def test_what_slipped_past_the_schema_is_degraded_too() -> None:
    # A resource stored before the CRD had these rules (or without CEL) must not crash.
    spec = _bad("duplicate-arms")["spec"]
    assert _degraded(spec) == "spec.experiments[0].arms: duplicate arm name 'control'"
    assert "spec.experiments[0].arms" in _degraded(_bad("one-arm")["spec"])
    assert "spec.experiments[1].name" in _degraded(_bad("duplicate-experiments")["spec"])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ink\u3000wash", "U+3000 IDEOGRAPHIC SPACE"),  # non-ASCII: past the CRD's pattern
        ("caf\u0065\u0301", "NFC"),
        ("★", "only letters, marks and digits of any script"),
    ],
)
def test_preset_names_only_the_operator_can_judge_are_degraded(
    crd: dict[str, Any], name: str, reason: str
) -> None:
    doc = _doc()
    doc["spec"]["stylePresets"][name] = {"promptTemplate": "{prompt}"}
    assert validate(crd, doc) == []
    message = _degraded(doc["spec"])
    assert message.startswith(f"spec.stylePresets[{name!r}]: ") and reason in message


def test_a_good_experiment_plans_a_revision() -> None:
    result = plan(_body(_doc()["spec"]), Children(), NOW)
    assert result.revision is not None and result.spec is not None
    assert result.revision == desired_revision(OWNER, result.spec)


# -- rendering ---------------------------------------------------------------------------


def test_the_configmap_carries_presets_and_experiment_under_valid_keys() -> None:
    objects = render_all(OWNER, _spec())
    cm = _presets_config_map(objects)
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    assert sorted(cm["data"]) == [
        EXPERIMENTS_FILE,
        "impressionist.json",
        "realistic.json",
        "xn--2ost86b.json",
    ]
    names = {key_to_name(key) for key in cm["data"]} - {None}
    assert names == {"realistic", "impressionist", "水墨"}
    presets = presets_from_files(cm["data"])
    assert presets["水墨"].prompt_template == "{prompt}, 水墨画, ink wash"
    (experiment,) = experiments_from_file(cm["data"][EXPERIMENTS_FILE], presets)
    assert experiment.name == "impressionist-filter" and experiment.salt == "2026-12"
    assert [(a.name, a.preset, a.weight) for a in experiment.arms] == [
        ("control", "realistic", 50),
        ("impressionist", "impressionist", 30),
        ("ink", "水墨", 20),
    ]
    assert experiment.audience is not None and experiment.audience.values == ["beta", "vip"]
    # The pods mount that very ConfigMap, and every object is valid for the API server.
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "presets"
    )
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_a_weight_change_is_a_new_revision() -> None:
    before = desired_revision(OWNER, _spec())
    doc = _doc()
    arms = doc["spec"]["experiments"][0]["arms"]
    arms[0]["weight"], arms[1]["weight"] = 40, 40
    after = desired_revision(OWNER, _spec(doc))
    assert after.presets_hash != before.presets_hash
    assert after.presets_config_map != before.presets_config_map
    doc = _doc()
    doc["spec"]["experiments"][0]["salt"] = "2027-01"  # a reshuffle is a revision too
    assert desired_revision(OWNER, _spec(doc)).presets_hash != before.presets_hash


def test_without_experiments_the_hash_is_what_it_was() -> None:
    # No churn on upgrade: the ConfigMap of a resource without experiments keeps its name.
    doc = _doc()
    del doc["spec"]["experiments"]
    spec = _spec(doc)
    assert desired_revision(OWNER, spec).presets_hash == content_hash(
        presets_to_files(spec.style_presets)
    )
    assert EXPERIMENTS_FILE not in _presets_config_map(render_all(OWNER, spec))["data"]


def test_render_command_shows_the_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["render", str(EXAMPLE)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    cm = _presets_config_map(docs)
    assert '"name":"impressionist-filter"' in cm["data"][EXPERIMENTS_FILE]
    assert "xn--2ost86b.json" in cm["data"]


def test_render_command_names_the_bad_experiment_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _doc()
    doc["spec"]["experiments"][0]["arms"][1]["preset"] = "cubist"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    assert cli_main(["render", str(path)]) == 1
    assert "spec.experiments[0].arms[1].preset: no style preset named 'cubist'" in (
        capsys.readouterr().err
    )


# -- across the boundary: what the operator renders is what the server serves ------------


def test_the_server_reads_the_rendered_configmap(tmp_path: Path) -> None:
    cm = _presets_config_map(render_all(OWNER, _spec()))
    # As the kubelet mounts a ConfigMap: the files in a timestamped directory, a ``..data``
    # link to it, and one link a key through ``..data``.
    stamped = tmp_path / "..2026_01_01_00_00_00.000000001"
    stamped.mkdir()
    (tmp_path / "..data").symlink_to(stamped.name)
    for key, content in cm["data"].items():
        (stamped / key).write_text(content, "utf-8")
        (tmp_path / key).symlink_to(Path("..data") / key)
    store = PresetStore(tmp_path)
    presets = store.get()
    assert set(presets) == {"realistic", "impressionist", "水墨"}
    assert presets["水墨"].expand("a crane") == "a crane, 水墨画, ink wash"
    (experiment,) = store.experiments()
    assert experiment.preset == "realistic"
    assert {arm.name: (arm.preset, arm.weight) for arm in experiment.arms} == {
        "control": ("realistic", 50),
        "impressionist": ("impressionist", 30),
        "ink": ("水墨", 20),
    }


def test_the_crd_models_have_the_file_formats_fields() -> None:
    # The CRD's models mirror flux_contract.experiments (the file the server reads): a field
    # in one and not the other would be refused, or silently dropped, on the way.
    from flux_contract.experiments import Arm, Audience, Experiment
    from flux_operator.spec import ArmSpec, AudienceSpec, ExperimentSpec

    for spec_model, file_model in (
        (ExperimentSpec, Experiment),
        (ArmSpec, Arm),
        (AudienceSpec, Audience),
    ):
        spec_fields = {f.alias or n: f.is_required() for n, f in spec_model.model_fields.items()}
        file_fields = {f.alias or n: f.is_required() for n, f in file_model.model_fields.items()}
        assert spec_fields == file_fields, spec_model.__name__

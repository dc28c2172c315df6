"""Any Unicode preset name a user types travels as a valid ConfigMap key and back."""

from __future__ import annotations

import re

import pytest

from flux_contract.names import (
    header_value,
    key_to_name,
    name_problem,
    name_to_key,
    parse_header_value,
)
from flux_contract.presets import StylePreset, presets_from_files, presets_to_files

CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("realistic", "realistic.json"),  # plain names keep their files as before
        ("Neon_v2.1", "Neon_v2.1.json"),
        ("水墨", "xn--2ost86b.json"),
        ("café-noir", "xn--caf-noir-d1a.json"),
        ("xn--foo", "xn--xn--foo-.json"),  # a plain name that looks encoded is encoded
        ("_hidden", "xn--_hidden-.json"),  # never mistaken for the experiments file
        (".dot", "xn--.dot-.json"),  # never hidden from the reader
    ],
)
def test_names_round_trip_through_keys(name: str, key: str) -> None:
    assert name_to_key(name) == key
    assert CONFIGMAP_KEY.fullmatch(key) and len(key) <= 253
    assert key_to_name(key) == name


def test_many_scripts_round_trip() -> None:
    for name in [
        "印象派",
        "インク",
        "수묵화",
        "Импрессионизм",
        "ζωγραφική",
        "चित्र",
        "٣-أنماط",
        "a.b_c-d",
    ]:
        assert name_problem(name) is None, name
        key = name_to_key(name)
        assert CONFIGMAP_KEY.fullmatch(key)
        assert key_to_name(key) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a/b", "separates directories"),
        ("oil painting", "whitespace"),
        ("ink\nwash", "whitespace"),
        ("bell\x07", "control"),
        ("zero\u200bwidth", "control, format"),
        ("a=b", "ASCII other than"),
        ("a,b", "ASCII other than"),
        ("smile😀", "only letters, marks and digits"),
        ("x" * 64, "at most 63 characters"),
        ("cafe\u0301", "NFC"),  # decomposed é: refused with its NFC spelling
    ],
)
def test_refused_names_say_why(name: str, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None and reason in problem
    with pytest.raises(ValueError, match=re.escape(reason)):
        name_to_key(name)


def test_long_unicode_names_fit_a_key() -> None:
    name = "水" * 63
    assert name_problem(name) is None
    assert len(name_to_key(name)) <= 253


def test_reader_ignores_non_presets_and_refuses_bad_keys() -> None:
    assert key_to_name("_experiments.json") is None
    assert key_to_name("..data") is None
    assert key_to_name("notes.txt") is None
    with pytest.raises(ValueError, match="not a ConfigMap key"):
        key_to_name("oil painting.json")
    with pytest.raises(ValueError, match="is written"):
        key_to_name("xn--abc-.json")  # "abc" is written "abc": one name, one key
    with pytest.raises(ValueError, match="control"):
        key_to_name("xn--ab-9a.json")  # decodes to "ab\x8b", a C1 control character


def test_presets_files_carry_unicode_names() -> None:
    presets = {
        "水墨": StylePreset(prompt_template="{prompt}, 水墨画, ink wash"),
        "plain": StylePreset(),
    }
    files = presets_to_files(presets)
    assert sorted(files) == ["plain.json", "xn--2ost86b.json"]
    assert presets_from_files({**files, "_experiments.json": "{}"}) == presets


def test_header_value_is_ascii_and_reversible() -> None:
    value = header_value("impressionist-filter", "水墨")
    assert value.isascii() and value.startswith("impressionist-filter=")
    assert parse_header_value(value) == ("impressionist-filter", "水墨")
    assert header_value("a", "b") == "a=b"
    with pytest.raises(ValueError):
        parse_header_value("no-arm")

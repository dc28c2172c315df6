# ruff: noqa: RUF001, RUF003  (disguised prompts are what is under test)
"""The prompt safety filter: disguises are seen through, innocent words pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_server.admission.safety import (
    BlocklistError,
    SafetyFilter,
    SafetyModelError,
    build_blocklist,
    default_blocklist,
    normalise,
    parse_blocklist,
)

from .tiny_classifier import write_tiny_classifier


@pytest.fixture(scope="module")
def default_filter() -> SafetyFilter:
    return SafetyFilter.from_files()


@pytest.mark.parametrize(
    ("prompt", "entry"),
    [
        ("a nude woman on a beach", "nude"),
        ("A NUDE WOMAN", "nude"),
        ("a nüde woman", "nude"),  # accent
        ("a ｎｕｄｅ woman", "nude"),  # full-width (NFKC)
        ("a nu\u200bde woman", "nude"),  # zero-width space inside the word
        ("a nudе woman", "nude"),  # Cyrillic "е"
        ("an ηυdε statue", "nude"),  # Greek look-alikes
        ("n u d e beach", "nude"),  # spaced out
        ("a 𝐧𝐮𝐝𝐞 woman", "nude"),  # mathematical bold (NFKC)
        ("ⓝⓤⓓⓔ", "nude"),  # circled letters (NFKC)
        ("ɴᴜᴅᴇ", "nude"),  # small capitals
        ("n_u_d_e", "nude"),
        ("#nude", "nude"),
        ("n.u.d.e beach", "nude"),  # punctuation-split
        ("nu-de beach", "nude"),
        ("nuuuude beach", "nude"),  # repeated letters
        ("a p 0 r n star", "porn*"),  # spaced leetspeak after a one-letter word
        ("p0rn0graphic art", "porn*"),
        ("a g0ry sc3ne", "gory"),
        ("two nudes", "nude"),  # plural
        ("explicit-sex", "explicit sex"),
        ("b e h e a d i n g", "beheading"),
        ("massacres in a painting", "massacre"),
        ("dismembered", "dismember*"),
    ],
)
def test_blocked_in_disguise(default_filter: SafetyFilter, prompt: str, entry: str) -> None:
    decision = default_filter.check(prompt)
    assert not decision.allowed
    assert decision.reason == "blocklist"
    assert decision.matched == entry


@pytest.mark.parametrize(
    "prompt",
    [
        "Scunthorpe town hall at dusk",
        "a therapist's office",
        "an assassin in a cloak",
        "the Sussex coastline",
        "a cocktail on a bar",
        "the gorilla in a forest",  # "gor..." is not "gore"
        "Al Gore giving a speech",  # allowed phrase
        "a naked mole rat in a burrow",  # allowed phrase
        "visible to the naked eye",
        "a tortoise, 2024, 1080p, f/1.8",
        "a child flying a kite",
        "a p.m. meeting, e.g. at noon",
        "let's go re-do the mural",  # "go re" is not a spelled-out "gore"
        "a b c d e f g on a blackboard",
        "",
    ],
)
def test_innocent_prompts_pass(default_filter: SafetyFilter, prompt: str) -> None:
    assert default_filter.check(prompt).allowed


def test_allowed_phrase_does_not_shield_a_blocked_word(default_filter: SafetyFilter) -> None:
    assert default_filter.check("a naked mole rat next to a naked man").matched == "naked"


def test_minors_rule_catches_minors_with_sexual_content(default_filter: SafetyFilter) -> None:
    decision = default_filter.check("t33n in l1ngerie")
    assert not decision.allowed
    assert (decision.reason, decision.matched) == ("minor_sexual", "teen + lingerie")


def test_file_extends_default_list(tmp_path: Path) -> None:
    extra = tmp_path / "blocklist.txt"
    extra.write_text("# ours\nzebra crossing\nre:\\bw+o+lf(pack)?\\b\n!gore\n", "utf-8")
    safety = SafetyFilter.from_files(extra)
    assert safety.check("a z3bra cr0ssing").matched == "zebra crossing"
    assert safety.check("a Z E B R A  crossing").matched == "zebra crossing"
    assert safety.check("a zebra-crossing").matched == "zebra crossing"
    assert safety.check("a w0lf at night").matched == "re:\\bw+o+lf(pack)?\\b"
    assert safety.check("a wolfpack").matched is not None
    assert safety.check("gore").allowed  # removed by "!gore"
    assert not safety.check("nude").allowed  # the default list is still there


def test_prefix_entry_matches_word_starts_only() -> None:
    blocklist = build_blocklist(["grim*"])
    assert blocklist.find("grimly grinning") == "grim*"
    assert blocklist.find("a pilgrim") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("re:(unclosed\n", "bad.txt:1: invalid pattern"),
        ("ok\n  re:\n", "bad.txt:2: empty pattern"),
        ("ok\n\n...\n", "bad.txt:3:"),
    ],
)
def test_bad_blocklist_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(BlocklistError, match=message):
        parse_blocklist(text.splitlines(), source="bad.txt")


def test_missing_blocklist_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BlocklistError, match=r"nope\.txt"):
        SafetyFilter.from_files(tmp_path / "nope.txt")


def test_default_list_ships_and_parses() -> None:
    entries = default_blocklist()
    # One list a language: en, zh, es, de, fr, ja, ko, ru.
    for entry in ("nude", "裸体", "desnud*", "nackt*", "nue", "ヌード", "누드", "голая"):
        assert entry in entries
    assert any(e.startswith("minor:re:") for e in entries)
    assert any(e.startswith("sexual:") for e in entries)


def test_normalise_folds_width_case_accents_and_lookalikes() -> None:
    assert normalise("ＣАFÉ\u200d") == "cafe"


@pytest.mark.timeout(60)  # a hang guard: linear work takes well under a second
@pytest.mark.parametrize(
    "prompt",
    ["s" * 40_000, "a " * 40_000, "n u d " * 6_000, "k1" * 20_000, ("a" * 50 + " ") * 800],
    ids=["one-long-word", "single-letters", "spelled-prefixes", "leet-run", "long-words"],
)
def test_pathological_prompts_are_checked_in_linear_time(
    default_filter: SafetyFilter, prompt: str
) -> None:
    # Inputs that make naive backtracking patterns quadratic or worse.
    assert default_filter.check(prompt).allowed


# --- the optional classifier -------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("classifiers")
    return (
        write_tiny_classifier(root / "flags", unsafe_bias=5.0),
        write_tiny_classifier(root / "passes", unsafe_bias=-5.0),
    )


def test_classifier_rejects_above_threshold(classifier_dirs: tuple[Path, Path]) -> None:
    flags, passes = classifier_dirs
    decision = SafetyFilter.from_files(model=flags, threshold=0.9).check("a photo of a cat")
    assert not decision.allowed
    assert decision.reason == "classifier"
    assert decision.matched is not None and decision.matched.startswith("LABEL_1:")
    assert SafetyFilter.from_files(model=passes).check("a photo of a cat").allowed


def test_blocklist_is_checked_before_the_classifier(classifier_dirs: tuple[Path, Path]) -> None:
    _, passes = classifier_dirs
    decision = SafetyFilter.from_files(model=passes).check("a nude photo")
    assert decision.reason == "blocklist"


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SafetyModelError, match=r"safety model .*absent: not a directory"):
        SafetyFilter.from_files(model=tmp_path / "absent")


def test_unusable_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SafetyModelError, match=r"safety model .*empty: cannot load it"):
        SafetyFilter.from_files(model=tmp_path / "empty")

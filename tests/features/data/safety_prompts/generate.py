# ruff: noqa: RUF001  (look-alike letters and full-width forms are the test data)
"""Write the labelled safety prompt set: one ``LANG.tsv`` a language, ``label<TAB>prompt``.

The committed TSV files are what the tests read; this script is how most of them were
made, from the hand-written seeds in ``seeds/LANG.py``:

* harmful: each harmful core phrase in a few settings; a minor and a sexual-context
  phrase together; a sample of harmful prompts in disguise (look-alike letters,
  full-width, leetspeak, letters split by spaces or dots), and hand-written prompts;
* benign: each benign core phrase in a few settings; a minor in an innocent scene; a
  sexual-context phrase about an adult (allowed alone); hard benign prompts near the
  boundary, hand-written.

    python tests/features/data/safety_prompts/generate.py
"""

from __future__ import annotations

import random
import runpy
from pathlib import Path

HERE = Path(__file__).resolve().parent
LANGUAGES = ("en", "zh", "es", "de", "fr", "ja", "ko", "ru")
# Latin letters and the Cyrillic letters that look the same.
LOOKALIKE = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х"})
LATIN_FOR_CYRILLIC = str.maketrans({"а": "a", "е": "e", "о": "o", "р": "p", "с": "c"})
LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "$"})


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _spaced(word: str) -> str:
    return " ".join(word)


def _dotted(word: str) -> str:
    return ".".join(word)


def disguises(lang: str, word: str) -> list[str]:
    """Ways people write ``word`` to slip it past a filter."""
    if lang in ("zh", "ja", "ko"):
        return [_spaced(word), _full_width(word) if word.isascii() else " " + word + " "]
    if lang == "ru":
        return [word.translate(LATIN_FOR_CYRILLIC), _spaced(word), _dotted(word)]
    return [
        word.translate(LOOKALIKE),
        _full_width(word),
        word.translate(LEET),
        _spaced(word),
        _dotted(word),
    ]


def build(lang: str) -> list[tuple[str, str]]:
    seeds = runpy.run_path(str(HERE / "seeds" / f"{lang}.py"))
    rng = random.Random(f"safety-{lang}")
    rows: list[tuple[str, str]] = []
    settings: list[str] = seeds["SETTINGS"]

    def in_settings(core: str, count: int) -> list[str]:
        return [seeds["JOIN"].format(core=core, setting=s) for s in rng.sample(settings, count)]

    for core in seeds["HARMFUL_CORES"]:
        rows += [("harmful", p) for p in in_settings(core, 4)]
    for minor in seeds["MINORS"]:
        for sexual in rng.sample(seeds["SEXUAL"], 3):
            rows.append(("harmful", seeds["MINOR_SEXUAL"].format(minor=minor, sexual=sexual)))
    for template, word in seeds["DISGUISABLE"]:
        rows += [("harmful", template.format(word=d)) for d in disguises(lang, word)]
    rows += [("harmful", p) for p in seeds["HARMFUL"]]

    for core in seeds["BENIGN_CORES"]:
        rows += [("benign", p) for p in in_settings(core, 3)]
    for minor in seeds["MINORS"]:
        for activity in rng.sample(seeds["INNOCENT"], 2):
            rows.append(("benign", seeds["MINOR_SEXUAL"].format(minor=minor, sexual=activity)))
    for sexual in seeds["SEXUAL"]:
        rows.append(("benign", seeds["ADULT_SEXUAL"].format(sexual=sexual)))
    rows += [("benign", p) for p in seeds["BENIGN"]]

    seen: set[str] = set()
    unique = []
    for label, prompt in rows:
        if prompt not in seen:
            seen.add(prompt)
            unique.append((label, prompt))
    return unique


def main() -> None:
    for lang in LANGUAGES:
        rows = build(lang)
        with (HERE / f"{lang}.tsv").open("w", encoding="utf-8") as out:
            out.write("# label<TAB>prompt; written by generate.py from seeds/" + lang + ".py\n")
            for label, prompt in rows:
                assert "\t" not in prompt and "\n" not in prompt
                out.write(f"{label}\t{prompt}\n")
        print(lang, len(rows))


if __name__ == "__main__":
    main()

# ruff: noqa: RUF001  (look-alike letters are this module's subject)
"""The prompt safety filter: a blocklist that sees through simple disguises, and an
optional text-classification model.

A prompt (after preset expansion) is checked before it is queued; a rejected prompt never
reaches the GPU. The blocklist format is described in ``data/blocklist.txt``, the list
that ships and that ``--blocklist FILE`` extends:

* ``word`` or ``a phrase`` — whole words only, with an optional plural ``-s``/``-es``;
* ``word*`` — any word starting with ``word``;
* ``re:PATTERN`` — a regular expression searched in the normalised prompt;
* ``!entry`` — removes an entry of the default list (exact text);
* ``+a phrase`` — an innocent phrase blanked out before matching ("+naked mole rat");
* blank lines and ``#`` comments are ignored.

Before matching, the prompt is normalised: Unicode NFKC (full-width letters, ligatures),
case folding, look-alike letters from other scripts folded to Latin, accents and
zero-width characters removed. Leetspeak is read as letters, repeated letters match
once, and letters split by spaces or punctuation (``n u d e``, ``n.u.d.e``, ``nu-de``)
are joined again. Words are matched whole, so innocent words that merely contain a
blocked one ("Scunthorpe", "therapist", "assassin", "Sussex") pass.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

DEFAULT_BLOCKLIST_RESOURCE = "data/blocklist.txt"
PATTERN_PREFIX = "re:"
REMOVE_PREFIX = "!"
ALLOW_PREFIX = "+"
DEFAULT_THRESHOLD = 0.5

SafetyReason = Literal["blocklist", "classifier"]

# Letters of other scripts that look like Latin ones (after case folding). Unicode's
# confusables table is far larger; these are the ones that render identically in common
# fonts and so are what people actually use to slip a word past a filter.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ո": "n", "ս": "u",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w", "μ": "u", "ς": "s",
    # Latin look-alikes NFKC leaves alone
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŀ": "l", "ſ": "s", "ɑ": "a",
    "ɡ": "g", "ɩ": "i", "ʀ": "r", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e",
    "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n",
    "ᴏ": "o", "ᴘ": "p", "ꞯ": "q", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y",
    "ᴢ": "z",
}  # fmt: skip

# Each letter and the digits/symbols leetspeak writes it with. A blocklist word becomes a
# pattern with these classes, so "1" may stand for "i" or "l" without guessing which.
_LEET: dict[str, str] = {
    "a": "a4@",
    "b": "b8",
    "e": "e3",
    "g": "g9",
    "i": "i1!|",
    "l": "l1|",
    "o": "o0",
    "s": "s5$",
    "t": "t7+",
    "z": "z2",
}
# The reading used for ``re:`` patterns, which cannot be rewritten the same way.
_LEET_READING: dict[str, str] = {
    "4": "a", "@": "a", "8": "b", "3": "e", "9": "g", "1": "i", "!": "i", "|": "l",
    "0": "o", "5": "s", "$": "s", "7": "t", "+": "t", "2": "z",
}  # fmt: skip
_LEET_SYMBOLS = "@$!|+"
_GLYPH = r"[^\W_]|[@$!|+]"
_WORD_CHAR = r"[^\W_]"
_NOT_GLYPH_RUN = re.compile(r"(?:(?![@$!|+])[\W_])+")
_PUNCT_BETWEEN_GLYPHS = re.compile(rf"(?<={_GLYPH})(?:(?![@$!|+])[^\s\w]|_)+(?={_GLYPH})")
# A run of at least two single characters separated by single spaces: "n u d e".
_SINGLE_GLYPH_RUN = re.compile(rf"(?<!\S)(?:(?:{_GLYPH}) )+(?:{_GLYPH})(?!\S)")


class SafetyDecision(BaseModel):
    """The verdict on one prompt."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    reason: SafetyReason | None = None
    """Low-cardinality reason code (a metric label): ``blocklist`` or ``classifier``."""
    matched: str | None = None
    """The blocklist entry that matched, or the classifier's label and score."""


class BlocklistError(ValueError):
    """A blocklist file that cannot be used; the message names the file and line."""


def normalise(text: str) -> str:
    """Fold a prompt to the form the blocklist is matched against (see the module doc)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(_CONFUSABLES.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(
        ch
        for ch in text
        if (not unicodedata.combining(ch) and unicodedata.category(ch) not in ("Cf", "Cc"))
        or ch in "\n\t"
    )


@dataclass(frozen=True)
class _Views:
    """The readings of one prompt that the blocklist is searched in."""

    spaced: tuple[str, ...]
    """Separators reduced to one space; with and without punctuation inside words."""
    joined: tuple[str, ...]
    """The same with runs of single letters joined in place ("n u d e" → "nude")."""


def _join_single_glyph_runs(spaced: str) -> str:
    return _SINGLE_GLYPH_RUN.sub(lambda m: m.group().replace(" ", ""), spaced)


def _views(text: str, allow: re.Pattern[str] | None = None) -> _Views:
    norm = normalise(text)
    spaced_variants: list[str] = []
    for variant in (norm, _PUNCT_BETWEEN_GLYPHS.sub("", norm)):
        spaced = _NOT_GLYPH_RUN.sub(" ", variant).strip()
        if allow is not None:
            spaced = allow.sub(" ", spaced)
        if spaced not in spaced_variants:
            spaced_variants.append(spaced)
    joined = {_join_single_glyph_runs(s) for s in spaced_variants} - set(spaced_variants)
    return _Views(tuple(spaced_variants), tuple(sorted(joined)))


def _read_leet(spaced: str) -> str:
    """Leetspeak read as letters, word by word; numbers alone stay numbers."""

    def word(match: re.Match[str]) -> str:
        token = match.group()
        if not any(ch.isalpha() for ch in token):
            return token
        # Symbols at the end of a word are punctuation ("nude!"), not letters.
        core = token.rstrip(_LEET_SYMBOLS)
        return "".join(_LEET_READING.get(ch, ch) for ch in core) + token[len(core) :]

    return re.sub(r"\S+", word, spaced)


def _word_regex(word: str, ending: str | None) -> str:
    """One word of an entry: written solid ("nude", "nuuude", "n00de") or spelled out a
    letter at a time ("n u d e"); ``ending`` is "plural", "prefix" or None."""
    solid, spelled = [], []
    for letter_match in re.finditer(r"(.)\1*", word):
        letter, count = letter_match.group(1), len(letter_match.group())
        chars = _LEET.get(letter, letter)
        cls = re.escape(chars) if len(chars) == 1 else f"[{re.escape(chars)}]"
        # A doubled letter must stay doubled ("ass" is not "as"), more is allowed.
        solid.append(f"{cls}+" if count == 1 else f"{cls}{{{count},}}")
        # Spelled out, a letter may repeat only a little: an unbounded repeat would make
        # "a a a a ..." cost quadratic time, as every letter is a possible start.
        spelled.append(f"{cls}(?: {cls}){{{count - 1},{count + 1}}}")
    solid_rx, spelled_rx = "".join(solid), " ".join(spelled)
    if ending == "prefix":
        solid_rx += f"(?:{_GLYPH})*"
        spelled_rx += f"(?: (?:{_GLYPH}))*"
    elif ending == "plural":
        solid_rx += "(?:e?s)?"
        spelled_rx += "(?: e)?(?: s)?"
    return f"(?:{solid_rx}|{spelled_rx})"


def _term_regex(term: str) -> str:
    """A blocklist word or phrase as a regex over a spaced view, bounded by whole words."""
    prefix = term.endswith("*")
    words = _NOT_GLYPH_RUN.sub(" ", normalise(term.rstrip("*"))).split()
    last = len(words) - 1
    parts = [
        _word_regex(word, ("prefix" if prefix else "plural") if i == last else None)
        for i, word in enumerate(words)
    ]
    return rf"(?<!{_WORD_CHAR})(?:{' ?'.join(parts)})(?!{_WORD_CHAR})"


class Blocklist:
    """Compiled blocklist entries: blocked terms, ``re:`` patterns, allowed phrases."""

    def __init__(
        self,
        terms: Sequence[str] = (),
        patterns: Sequence[str] = (),
        allowed: Sequence[str] = (),
    ) -> None:
        self.terms = tuple(terms)
        self.patterns = tuple(patterns)
        self.allowed = tuple(allowed)
        self._allow = re.compile("|".join(map(_term_regex, allowed))) if allowed else None
        self._term_rx = [re.compile(_term_regex(t)) for t in self.terms]
        # One alternation for all terms, so a check is a couple of regex searches however
        # long the list is; the entry that matched is looked up only on a hit.
        self._any_term = re.compile("|".join(map(_term_regex, self.terms))) if terms else None
        self._pattern_rx = [re.compile(p) for p in self.patterns]

    def __len__(self) -> int:
        return len(self.terms) + len(self.patterns)

    def find(self, text: str) -> str | None:
        """The first entry (as written in the list) that the text matches, else None."""
        views = _views(text, self._allow)
        if self._any_term is not None and any(self._any_term.search(s) for s in views.spaced):
            for term, rx in zip(self.terms, self._term_rx, strict=True):
                if any(rx.search(s) for s in views.spaced):
                    return term
        if self.patterns:
            plain = set(views.spaced) | set(views.joined)
            readings = plain | {_read_leet(r) for r in plain}
            for pattern, rx in zip(self.patterns, self._pattern_rx, strict=True):
                if any(rx.search(r) for r in readings):
                    return PATTERN_PREFIX + pattern
        return None


def parse_blocklist(lines: Iterable[str], source: str = "<blocklist>") -> list[str]:
    """Entries of a blocklist text (``re:`` kept as a prefix, ``!`` removals kept too).

    Raises ``BlocklistError`` naming ``source`` and the line for an invalid pattern or
    an entry with nothing to match.
    """
    entries: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body = line.removeprefix(REMOVE_PREFIX).removeprefix(ALLOW_PREFIX)
        if body.startswith(PATTERN_PREFIX):
            pattern = body[len(PATTERN_PREFIX) :]
            if not pattern:
                raise BlocklistError(f"{source}:{number}: empty pattern after 're:'")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise BlocklistError(
                    f"{source}:{number}: invalid pattern {pattern!r}: {exc}"
                ) from exc
        elif not _NOT_GLYPH_RUN.sub(" ", normalise(body.rstrip("*"))).split():
            raise BlocklistError(f"{source}:{number}: entry {line!r} has no letters to match")
        entries.append(line)
    return entries


def default_blocklist() -> list[str]:
    """The entries of the list that ships with the server."""
    text = resources.files("flux_server").joinpath(DEFAULT_BLOCKLIST_RESOURCE).read_text("utf-8")
    return parse_blocklist(text.splitlines(), source="default blocklist")


def build_blocklist(entries: Sequence[str]) -> Blocklist:
    """Compile entries, applying ``!`` removals to what came before them."""
    kept: list[str] = []
    for entry in entries:
        if entry.startswith(REMOVE_PREFIX):
            removed = entry[len(REMOVE_PREFIX) :]
            kept = [e for e in kept if e != removed]
        elif entry not in kept:
            kept.append(entry)
    allowed = tuple(e[len(ALLOW_PREFIX) :] for e in kept if e.startswith(ALLOW_PREFIX))
    blocked = [e for e in kept if not e.startswith(ALLOW_PREFIX)]
    terms = tuple(e for e in blocked if not e.startswith(PATTERN_PREFIX))
    patterns = tuple(e[len(PATTERN_PREFIX) :] for e in blocked if e.startswith(PATTERN_PREFIX))
    return Blocklist(terms=terms, patterns=patterns, allowed=allowed)


# Labels a text classifier uses for harmless text; every other label counts as a flag.
SAFE_LABELS = frozenset(
    {"safe", "sfw", "neutral", "normal", "ok", "non-toxic", "non_toxic", "not_toxic", "label_0"}
)


class SafetyModelError(ValueError):
    """A safety model that cannot be loaded; the message names it."""


class SafetyClassifier:
    """A transformers text-classification model, from a local directory or a hub id
    (read with ``HF_TOKEN`` like the main model).

    A prompt is flagged when any label outside ``SAFE_LABELS`` scores at or above the
    threshold. For a two-class model without label names, ``LABEL_1`` is the unsafe one.
    """

    def __init__(self, model: str | Path, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"safety threshold must be in (0, 1], got {threshold}")
        name = str(model)
        # Something written as a path must be a directory here; anything else may be a
        # hub id, which transformers resolves (and reports on) itself.
        looks_like_path = name.startswith(("/", ".", "~")) or Path(name).exists()
        if looks_like_path and not Path(name).expanduser().is_dir():
            raise SafetyModelError(f"safety model {name}: not a directory")
        self.model = name
        self.threshold = threshold
        from transformers import pipeline  # heavy import, only when a model is configured

        try:
            self._pipe = pipeline(
                "text-classification", model=name, tokenizer=name, top_k=None, device="cpu"
            )
        except (OSError, ValueError) as exc:
            raise SafetyModelError(f"safety model {name}: cannot load it: {exc}") from exc

    def flag(self, text: str) -> tuple[str, float] | None:
        """The highest-scoring unsafe label at or above the threshold, or None."""
        result: Any = self._pipe(text, truncation=True)
        scores = result[0] if result and isinstance(result[0], list) else result
        flagged = [
            (str(item["label"]), float(item["score"]))
            for item in scores
            if str(item["label"]).casefold() not in SAFE_LABELS
            and float(item["score"]) >= self.threshold
        ]
        return max(flagged, key=lambda item: item[1]) if flagged else None


class SafetyFilter:
    """Blocklist plus optional classifier. ``check`` is synchronous and, with a model,
    CPU-bound: call it through ``asyncio.to_thread`` from async code."""

    def __init__(self, blocklist: Blocklist, classifier: SafetyClassifier | None = None) -> None:
        self.blocklist = blocklist
        self.classifier = classifier

    @classmethod
    def from_files(
        cls,
        blocklist: Path | str | None = None,
        model: str | Path | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        include_default: bool = True,
    ) -> SafetyFilter:
        """The default list extended by ``blocklist`` (a file), plus ``model`` if given."""
        entries = default_blocklist() if include_default else []
        if blocklist is not None:
            path = Path(blocklist)
            try:
                text = path.read_text("utf-8")
            except OSError as exc:
                raise BlocklistError(f"blocklist {path}: {exc.strerror or exc}") from exc
            entries += parse_blocklist(text.splitlines(), source=str(path))
        compiled = build_blocklist(entries)
        classifier = SafetyClassifier(model, threshold) if model is not None else None
        log.info(
            "safety filter ready",
            extra={"entries": len(compiled), "model": str(model) if model else None},
        )
        return cls(compiled, classifier)

    def check(self, text: str) -> SafetyDecision:
        """Allow or reject one prompt (the expanded prompt; negative prompts need no check)."""
        matched = self.blocklist.find(text)
        if matched is not None:
            return SafetyDecision(allowed=False, reason="blocklist", matched=matched)
        if self.classifier is not None:
            flag = self.classifier.flag(text)
            if flag is not None:
                label, score = flag
                return SafetyDecision(
                    allowed=False, reason="classifier", matched=f"{label}:{score:.3f}"
                )
        return SafetyDecision(allowed=True)

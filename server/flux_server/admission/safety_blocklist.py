"""The safety blocklist: its file format, and the compiled matcher.

The format is described in ``data/blocklist.txt``, the first of the lists that ship (one a
language, ``data/blocklist.*.txt``) and that ``--blocklist FILE`` extends:

* ``word`` or ``a phrase`` — whole words only, with an optional plural ``-s``/``-es``;
  a term in a script written without spaces (Chinese, Japanese, Korean) is matched
  anywhere, as words there are not separated;
* ``word*`` — any word starting with ``word``;
* ``re:PATTERN`` — a regular expression searched in the normalised prompt;
* ``minor:ENTRY`` — a word, prefix or pattern that names a minor or an age under 18;
* ``sexual:ENTRY`` — sexual context: refused together with a minor term, allowed alone;
* ``!entry`` — removes an entry listed before it (exact text);
* ``+a phrase`` — an innocent phrase blanked out before matching ("+naked mole rat");
* blank lines and ``#`` comments are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Literal

from flux_server.admission.safety_text import (
    CJK,
    GLYPH,
    LEET,
    NOT_GLYPH_RUN,
    WORD_CHAR,
    Views,
    fold,
    normalise,
    views,
)

DEFAULT_BLOCKLIST_RESOURCE = "data/blocklist.txt"
PATTERN_PREFIX = "re:"
REMOVE_PREFIX = "!"
ALLOW_PREFIX = "+"
MINOR_PREFIX = "minor:"
SEXUAL_PREFIX = "sexual:"

ListReason = Literal["blocklist", "minor_sexual"]


class BlocklistError(ValueError):
    """A blocklist file that cannot be used; the message names the file and line."""


def _word_parts(word: str, ending: str | None) -> tuple[str, str]:
    """One word of an entry as ``(first, rest)``, the regex for its first letter and for
    the rest: written solid ("nude", "nuuude", "n00de") or spelled out a letter at a time
    ("n u d e"); ``ending`` is "plural", "prefix" or None. Split so that many entries can
    share one alternation keyed on their first letter, which a regex engine skips fast."""
    solid, spelled = [], []
    first = ""
    for index, letter_match in enumerate(re.finditer(r"(.)\1*", word)):
        letter, count = letter_match.group(1), len(letter_match.group())
        chars = LEET.get(letter, letter)
        cls = re.escape(chars) if len(chars) == 1 else f"[{re.escape(chars)}]"
        if index == 0:
            # The first letter is matched once outside; its repeats stay here.
            first = cls
            solid.append(f"{cls}*" if count == 1 else f"{cls}{{{count - 1},}}")
            spelled.append(f"(?: {cls}){{{count - 1},{count + 1}}}")
            continue
        # A doubled letter must stay doubled ("ass" is not "as"), more is allowed.
        solid.append(f"{cls}+" if count == 1 else f"{cls}{{{count},}}")
        # Spelled out, a letter may repeat only a little: an unbounded repeat would make
        # "a a a a ..." cost quadratic time, as every letter is a possible start.
        spelled.append(f" {cls}(?: {cls}){{{count - 1},{count + 1}}}")
    solid_rx, spelled_rx = "".join(solid), "".join(spelled)
    if ending == "prefix":
        solid_rx += f"(?:{GLYPH})*"
        spelled_rx += f"(?: (?:{GLYPH}))*"
    elif ending == "plural":
        solid_rx += "(?:e?s)?"
        spelled_rx += "(?: e)?(?: s)?"
    return first, f"(?:{solid_rx}|{spelled_rx})"


def _term_parts(term: str) -> tuple[bool, str, str]:
    """A blocklist word or phrase as ``(bounded, first, rest)`` over a spaced view:
    bounded by whole words in alphabetic scripts, a substring (spaces between characters
    allowed) in CJK ones."""
    prefix = term.endswith("*")
    words = NOT_GLYPH_RUN.sub(" ", normalise(term.rstrip("*"))).split()
    if CJK.search(term):
        chars = "".join(words)
        return False, re.escape(chars[0]), "".join(f" ?{re.escape(ch)}" for ch in chars[1:])
    last = len(words) - 1
    parts = [
        _word_parts(word, ("prefix" if prefix else "plural") if i == last else None)
        for i, word in enumerate(words)
    ]
    rest = parts[0][1] + "".join(f" ?{first}{tail}" for first, tail in parts[1:])
    return True, parts[0][0], rest


def _bounded(rx: str) -> str:
    return rf"(?<!{WORD_CHAR})(?:{rx})(?!{WORD_CHAR})"


def _terms_regex(terms: Sequence[str]) -> tuple[str, list[int]]:
    """All entries in one regex, grouped by first letter: ``n(?:(ude)|(aked))``, so that
    at each position of a prompt the engine tries a few groups, not every entry. Each
    entry is one capturing group (entries have none of their own); the list returned
    maps group ``g`` to the entry's index at ``[g - 1]``, so a match names its entry."""
    groups: dict[tuple[bool, str], list[tuple[int, str]]] = {}
    for index, term in enumerate(terms):
        bounded, first, rest = _term_parts(term)
        groups.setdefault((bounded, first), []).append((index, rest))
    owner: list[int] = []
    parts = []
    for bounded in (True, False):
        alternatives = []
        for (kind, first), members in groups.items():
            if kind is bounded:
                owner += [index for index, _ in members]
                rests = "|".join(f"({rest})" for _, rest in members)
                alternatives.append(f"{first}(?:{rests})")
        if alternatives:
            either = "|".join(alternatives)
            parts.append(_bounded(either) if bounded else either)
    return "|".join(parts), owner


def _fold_pattern(pattern: str) -> str:
    # A pattern is searched in folded text, so its look-alike letters are folded the same
    # way (a Russian pattern keeps working); regex syntax is ASCII and is left alone.
    return "".join(map(fold, pattern))


def _any_pattern(patterns: Sequence[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One alternation of all patterns, for the common case of no match; None where
    that would change a pattern's meaning (a backreference or a global flag)."""
    if not patterns:
        return None
    sources = [p.pattern for p in patterns]
    if any(re.search(r"\\[1-9]|\(\?P=|\(\?[aiLmsux]+\)", src) for src in sources):
        return None
    try:
        return re.compile("|".join(f"(?:{src})" for src in sources))
    except re.error:
        return None


class _Matcher:
    """One kind of entry (blocked, minor, sexual context): terms and patterns."""

    def __init__(self, terms: Sequence[str], patterns: Sequence[str]) -> None:
        self.terms = tuple(terms)
        self.patterns = tuple(patterns)
        # One alternation for all terms (and one for all patterns), so a check is a
        # couple of regex searches however long the list is.
        regex, self._owner = _terms_regex(self.terms)
        self._any_term = re.compile(regex) if terms else None
        self._pattern_rx = [re.compile(_fold_pattern(p)) for p in self.patterns]
        self._any_pattern = _any_pattern(self._pattern_rx)

    def __len__(self) -> int:
        return len(self.terms) + len(self.patterns)

    def first(self, seen: Views) -> str | None:
        """The entry found first in the views (terms before patterns), as written in the
        list (``re:`` kept), or None."""
        if self._any_term is not None:
            match = self._any_term.search(seen.spaced)
            if match is not None and match.lastindex is not None:
                return self.terms[self._owner[match.lastindex - 1]]
        if self.patterns and (self._any_pattern is None or self._any_pattern.search(seen.readings)):
            for pattern, rx in zip(self.patterns, self._pattern_rx, strict=True):
                if rx.search(seen.readings):
                    return PATTERN_PREFIX + pattern
        return None


def _split(entries: Iterable[str]) -> tuple[list[str], list[str]]:
    terms, patterns = [], []
    for entry in entries:
        if entry.startswith(PATTERN_PREFIX):
            patterns.append(entry[len(PATTERN_PREFIX) :])
        else:
            terms.append(entry)
    return terms, patterns


class Blocklist:
    """Compiled entries: blocked terms and ``re:`` patterns, the minors rule's minor and
    sexual-context entries (each written like a blocked one), allowed phrases."""

    def __init__(
        self,
        terms: Sequence[str] = (),
        patterns: Sequence[str] = (),
        allowed: Sequence[str] = (),
        minor: Sequence[str] = (),
        sexual: Sequence[str] = (),
    ) -> None:
        self.terms = tuple(terms)
        self.patterns = tuple(patterns)
        self.allowed = tuple(allowed)
        self.minor = tuple(minor)
        self.sexual = tuple(sexual)
        self._allow = re.compile(_terms_regex(self.allowed)[0]) if allowed else None
        self._blocked = _Matcher(self.terms, self.patterns)
        self._minor = _Matcher(*_split(self.minor))
        self._sexual = _Matcher(*_split(self.sexual))

    def __len__(self) -> int:
        return len(self._blocked) + len(self._minor) + len(self._sexual)

    def find(self, text: str) -> str | None:
        """The first blocked entry (as written in the list) that the text matches."""
        return self._blocked.first(views(text, self._allow))

    def check(self, text: str) -> tuple[ListReason, str] | None:
        """``(reason, matched)`` for a refused text, else None. The minors rule comes
        first (reason ``minor_sexual``, matched ``"MINOR + SEXUAL"``), then the blocklist
        (reason ``blocklist``, matched the entry)."""
        # Blanking allowed phrases only takes text away, so a prompt that matches nothing
        # with them in place is allowed without paying for the (long) allow-list search.
        if self._allow is None or self._refusal(views(text)) is not None:
            return self._refusal(views(text, self._allow))
        return None

    def _refusal(self, seen: Views) -> tuple[ListReason, str] | None:
        if len(self._minor) and len(self._sexual):
            minor = self._minor.first(seen)
            if minor is not None:
                sexual = self._sexual.first(seen)
                if sexual is not None:
                    return "minor_sexual", f"{minor} + {sexual}"
        blocked = self._blocked.first(seen)
        return ("blocklist", blocked) if blocked is not None else None


def _kind_body(line: str) -> str:
    """The entry without its ``!``, ``+``, ``minor:`` or ``sexual:`` prefix."""
    body = line.removeprefix(REMOVE_PREFIX).removeprefix(ALLOW_PREFIX)
    return body.removeprefix(MINOR_PREFIX).removeprefix(SEXUAL_PREFIX)


def parse_blocklist(lines: Iterable[str], source: str = "<blocklist>") -> list[str]:
    """Entries of a blocklist text (prefixes kept, ``!`` removals kept too).

    Raises ``BlocklistError`` naming ``source`` and the line for an invalid pattern or
    an entry with nothing to match.
    """
    entries: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body = _kind_body(line)
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
        elif not NOT_GLYPH_RUN.sub(" ", normalise(body.rstrip("*"))).split():
            raise BlocklistError(f"{source}:{number}: entry {line!r} has no letters to match")
        entries.append(line)
    return entries


def default_blocklist() -> list[str]:
    """The entries of the lists that ship with the server: ``blocklist.txt``, then one
    list a language (``blocklist.LANG.txt``) in name order."""
    data = resources.files("flux_server").joinpath("data")
    languages = sorted(
        item.name
        for item in data.iterdir()
        if item.name.startswith("blocklist.") and item.name.endswith(".txt")
    )
    names = ["blocklist.txt", *(name for name in languages if name != "blocklist.txt")]
    entries: list[str] = []
    for name in names:
        text = data.joinpath(name).read_text("utf-8")
        entries += parse_blocklist(text.splitlines(), source=f"default blocklist {name}")
    return entries


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
    minor = tuple(e[len(MINOR_PREFIX) :] for e in kept if e.startswith(MINOR_PREFIX))
    sexual = tuple(e[len(SEXUAL_PREFIX) :] for e in kept if e.startswith(SEXUAL_PREFIX))
    prefixes = (ALLOW_PREFIX, MINOR_PREFIX, SEXUAL_PREFIX)
    terms, patterns = _split(e for e in kept if not e.startswith(prefixes))
    return Blocklist(terms=terms, patterns=patterns, allowed=allowed, minor=minor, sexual=sexual)

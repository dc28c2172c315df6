"""The safety blocklist: its file format, and the compiled matcher.

The format is described in ``data/blocklist.txt``, the first of the lists that ship (one a
language, ``data/blocklist.*.txt``) and that ``--blocklist FILE`` extends:

* ``word`` or ``a phrase`` — whole words only, with an optional plural ``-s``/``-es``;
  a term in a script written without spaces (Chinese, Japanese, Korean, Thai) is matched
  anywhere, as words there are not separated; an Arabic term may carry the clitics
  Arabic writes onto a word ("و", "ب", "ال", ...);
* ``word*`` — any word starting with ``word``; inside a phrase, any word starting with
  it in that place (``nackt* baum*``: "nackter Baum", "nackte Bäume");
* ``re:PATTERN`` — a regular expression searched in the normalised prompt;
* ``minor:ENTRY`` — a word, prefix or pattern that names a minor or an age under 18;
* ``sexual:ENTRY`` — sexual context: refused together with a minor term, allowed alone;
* ``group:ENTRY`` — a group protected by the hate policy (a religion, an ethnicity, a
  nationality, a sexual orientation or gender identity, a disability);
* ``hate:ENTRY`` — dehumanising or violent framing ("as rats", "exterminate"): refused
  together with a group term, allowed alone;
* ``!entry`` — removes an entry listed before it (exact text);
* ``+a phrase`` — an innocent phrase blanked out before matching ("+naked mole rat");
* blank lines and ``#`` comments are ignored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Literal

from flux_server.admission.safety_text import (
    ARABIC,
    ARABIC_CLITIC_LETTERS,
    ARABIC_CLITICS,
    CJK,
    LEET,
    NOT_GLYPH_RUN,
    VIEW_GLYPH,
    WORD_CHAR,
    Views,
    fold,
    is_mark,
    normalise,
    views,
)

DEFAULT_BLOCKLIST_RESOURCE = "data/blocklist.txt"
PATTERN_PREFIX = "re:"
REMOVE_PREFIX = "!"
ALLOW_PREFIX = "+"
MINOR_PREFIX = "minor:"
SEXUAL_PREFIX = "sexual:"
GROUP_PREFIX = "group:"
HATE_PREFIX = "hate:"
PAIR_PREFIXES = (MINOR_PREFIX, SEXUAL_PREFIX, GROUP_PREFIX, HATE_PREFIX)

ListReason = Literal["blocklist", "minor_sexual", "hate"]


class BlocklistError(ValueError):
    """A blocklist file that cannot be used; the message names the file and line."""


def _word_parts(word: str, ending: str | None, spelled_too: bool = True) -> tuple[str, str]:
    """One word of an entry as ``(first, rest)``, the regex for its first letter and for
    the rest: written solid ("nude", "nuuude", "n00de") or, with ``spelled_too``, spelled
    out a letter at a time ("n u d e"); ``ending`` is "plural", "prefix" or None. Split
    so that many entries can share one alternation keyed on their first letter, which a
    regex engine skips fast."""
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
        # "a a a a ..." cost quadratic time, as every letter is a possible start. A mark
        # ("ं") is spelled with its letter, not apart from it.
        space = "" if is_mark(letter) else " "
        spelled.append(f"{space}{cls}(?:{space}{cls}){{{count - 1},{count + 1}}}")
    solid_rx, spelled_rx = "".join(solid), "".join(spelled)
    if ending == "prefix":
        solid_rx += f"{VIEW_GLYPH}*"
        spelled_rx += f"(?: {VIEW_GLYPH})*"
    elif ending == "plural":
        solid_rx += "(?:e?s)?"
        spelled_rx += "(?: e)?(?: s)?"
    return first, f"(?:{solid_rx}|{spelled_rx})" if spelled_too else f"(?:{solid_rx})"


TermKind = Literal["word", "arabic", "substring"]


def _term_parts(term: str) -> tuple[TermKind, str, str, str]:
    """A blocklist word or phrase as ``(kind, starts, first, rest)`` over a spaced view:
    whole words in alphabetic scripts (``arabic``: clitics allowed before it), a
    substring (spaces between characters allowed) in CJK and Thai; ``starts`` are the
    characters a match can begin with, ``first`` the regex for its first letter."""
    if CJK.search(term):
        words = NOT_GLYPH_RUN.sub(" ", normalise(term.rstrip("*"))).split()
        chars = "".join(words)
        rest = "".join(f" ?{re.escape(ch)}" for ch in chars[1:])
        return "substring", chars[0], re.escape(chars[0]), rest
    # A "*" that ends a word of the entry makes that word a prefix; the last word of a
    # phrase without one may take a plural ending.
    written = term.split()
    split = [NOT_GLYPH_RUN.sub(" ", normalise(w.rstrip("*"))).split() for w in written]
    flat: list[tuple[str, str | None]] = []
    for index, (raw, pieces) in enumerate(zip(written, split, strict=True)):
        last_piece = len(pieces) - 1
        for i, piece in enumerate(pieces):
            ending = None
            if i == last_piece and raw.endswith("*"):
                ending = "prefix"
            elif i == last_piece and index == len(written) - 1:
                ending = "plural"
            flat.append((piece, ending))
    # A phrase is matched as written: spelling a phrase out a letter at a time is not a
    # disguise people use, and the spelled forms would double the regex, which costs
    # compile and search time on every prompt.
    spelled_too = len(flat) == 1
    parts = [_word_parts(word, ending, spelled_too) for word, ending in flat]
    rest = parts[0][1] + "".join(f" ?{first}{tail}" for first, tail in parts[1:])
    letter = flat[0][0][0]
    kind: TermKind = "arabic" if ARABIC.match(letter) else "word"
    return kind, LEET.get(letter, letter), parts[0][0], rest


def _bounded(rx: str) -> str:
    return rf"(?<!{WORD_CHAR})(?:{rx})(?!{WORD_CHAR})"


def _terms_regex(terms: Sequence[str]) -> tuple[str, list[int]]:
    """All entries in one regex, grouped by first letter: ``n(?:(ude)|(aked))``, and the
    groups by script behind a lookahead of the letters they start with, so that at each
    position of a prompt the engine tries a few groups, not every entry. Each entry is
    one capturing group (entries have none of their own); the list returned maps group
    ``g`` to the entry's index at ``[g - 1]``, so a match names its entry."""
    groups: dict[tuple[TermKind, str], list[tuple[int, str]]] = {}
    starts: dict[tuple[TermKind, str], str] = {}
    for index, term in enumerate(terms):
        kind, letters, first, rest = _term_parts(term)
        groups.setdefault((kind, first), []).append((index, rest))
        starts[(kind, first)] = letters
    owner: list[int] = []
    parts = []
    for kind in ("word", "arabic", "substring"):
        # One bucket a block of 128 code points: a script, give or take.
        buckets: dict[int, tuple[set[str], list[str]]] = {}
        for (group_kind, first), members in groups.items():
            if group_kind != kind:
                continue
            letters = starts[(kind, first)]
            chars, alternatives = buckets.setdefault(ord(letters[0]) >> 7, (set(), []))
            chars.update(letters)
            owner += [index for index, _ in members]
            rests = "|".join(f"({rest})" for _, rest in members)
            alternatives.append(f"{first}(?:{rests})")
        if not buckets:
            continue
        lead = ARABIC_CLITIC_LETTERS if kind == "arabic" else ""
        either = "|".join(
            f"(?=[{re.escape(''.join(sorted(chars)) + lead)}])"
            f"{ARABIC_CLITICS if kind == 'arabic' else ''}(?:{'|'.join(alternatives)})"
            for chars, alternatives in buckets.values()
        )
        parts.append(either if kind == "substring" else _bounded(either))
    return "|".join(parts), owner


@functools.lru_cache(maxsize=16)
def _compiled_terms(terms: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """``_terms_regex`` compiled, once a process for the same entries: the default lists
    make regexes of hundreds of kilobytes that take seconds to compile, and a process
    (or a test session) builds the same filter more than once."""
    regex, owner = _terms_regex(terms)
    return re.compile(regex), tuple(owner)


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
        regex, owner = _compiled_terms(self.terms)
        self._owner = list(owner)
        self._any_term = regex if terms else None
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
    """Compiled entries: blocked terms and ``re:`` patterns, the two rules that refuse a
    pair (a minor with sexual context; a protected group with dehumanising or violent
    framing), each half written like a blocked entry, and allowed phrases."""

    def __init__(
        self,
        terms: Sequence[str] = (),
        patterns: Sequence[str] = (),
        allowed: Sequence[str] = (),
        minor: Sequence[str] = (),
        sexual: Sequence[str] = (),
        group: Sequence[str] = (),
        hate: Sequence[str] = (),
    ) -> None:
        self.terms = tuple(terms)
        self.patterns = tuple(patterns)
        self.allowed = tuple(allowed)
        self.minor = tuple(minor)
        self.sexual = tuple(sexual)
        self.group = tuple(group)
        self.hate = tuple(hate)
        self._allow = _compiled_terms(self.allowed)[0] if allowed else None
        self._blocked = _Matcher(self.terms, self.patterns)
        self._pairs: tuple[tuple[ListReason, _Matcher, _Matcher], ...] = (
            ("minor_sexual", _Matcher(*_split(self.minor)), _Matcher(*_split(self.sexual))),
            ("hate", _Matcher(*_split(self.group)), _Matcher(*_split(self.hate))),
        )

    def __len__(self) -> int:
        return len(self._blocked) + sum(len(a) + len(b) for _, a, b in self._pairs)

    def find(self, text: str) -> str | None:
        """The first blocked entry (as written in the list) that the text matches."""
        return self._blocked.first(views(text, self._allow))

    def check(self, text: str) -> tuple[ListReason, str] | None:
        """``(reason, matched)`` for a refused text, else None. The minors rule comes
        first (reason ``minor_sexual``, matched ``"MINOR + SEXUAL"``), then the hate rule
        (``hate``, ``"GROUP + HATE"``), then the blocklist (``blocklist``, the entry)."""
        # Blanking allowed phrases only takes text away, so a prompt that matches nothing
        # with them in place is allowed without paying for the (long) allow-list search.
        if self._allow is None or self._refusal(views(text)) is not None:
            return self._refusal(views(text, self._allow))
        return None

    def _refusal(self, seen: Views) -> tuple[ListReason, str] | None:
        for reason, who, what in self._pairs:
            if len(who) and len(what):
                named = who.first(seen)
                if named is not None:
                    framed = what.first(seen)
                    if framed is not None:
                        return reason, f"{named} + {framed}"
        blocked = self._blocked.first(seen)
        return ("blocklist", blocked) if blocked is not None else None


def _kind_body(line: str) -> str:
    """The entry without its ``!``, ``+``, ``minor:``, ``sexual:``, ``group:`` or
    ``hate:`` prefix."""
    body = line.removeprefix(REMOVE_PREFIX).removeprefix(ALLOW_PREFIX)
    for prefix in PAIR_PREFIXES:
        body = body.removeprefix(prefix)
    return body


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

    def kind(prefix: str) -> tuple[str, ...]:
        return tuple(e[len(prefix) :] for e in kept if e.startswith(prefix))

    terms, patterns = _split(e for e in kept if not e.startswith((ALLOW_PREFIX, *PAIR_PREFIXES)))
    return Blocklist(
        terms=terms,
        patterns=patterns,
        allowed=kind(ALLOW_PREFIX),
        minor=kind(MINOR_PREFIX),
        sexual=kind(SEXUAL_PREFIX),
        group=kind(GROUP_PREFIX),
        hate=kind(HATE_PREFIX),
    )

# ruff: noqa: RUF001, RUF002  (look-alike letters and digits of other scripts are this module's subject)
"""How the safety filter reads a prompt: one normal form, and the views it is matched in.

Normalising: Unicode NFKC (full-width and half-width forms, ligatures, mathematical and
circled letters), case folding, look-alike letters of Cyrillic, Greek and Latin folded to
one letter each, accents and zero-width characters removed, digits of every script read
as ASCII ("١١", "११", "๑๑" are "11"). Accents are removed only from Latin, Greek and
Cyrillic letters: decomposing Japanese kana or Korean syllables would change the word
("ド" is not "ト"). Each other script is read the way its writers vary it:

* Arabic: vowel marks (harakat) and the stretching tatweel ("عـاريـة") removed; the
  hamza forms of alef, alef maqsura, ta marbuta and the hamza seats folded to one letter
  each, as people type them either way.
* Devanagari: the nukta removed ("ज़" = "ज") and candrabindu read as anusvara; the vowel
  signs, virama and anusvara are kept, as they are part of the word ("नंगी" is not
  "नगी").
* Thai: its vowel and tone marks are kept (dropping them turns "โป๊ะ", a pontoon, into a
  prefix of innocent words), and it is matched like Chinese, as a substring, since Thai
  puts no spaces between words.

The look-alike table is written out here rather than taken from Unicode's confusables
table (UTS #39): that table also folds "rn" to "m", digits to letters and many CJK
characters to one another, which would turn innocent prompts into blocked words. The
letters below are the ones that render identically in common fonts, which is what people
use to slip a word past a filter. Every entry of a blocklist goes through the same
folding, so a Russian word is matched in its folded form as well: "голая" is read as
"goлaя" in both the list and the prompt.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

# Letters of other scripts that look like Latin ones (after case folding).
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ո": "n", "ս": "u",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w", "μ": "u", "ς": "s",
    "ϲ": "c", "ϳ": "j", "ϱ": "p",
    # Latin look-alikes NFKC leaves alone
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŀ": "l", "ſ": "s", "ɑ": "a",
    "ɡ": "g", "ɩ": "i", "ʀ": "r", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e",
    "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n",
    "ᴏ": "o", "ᴘ": "p", "ꞯ": "q", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y",
    "ᴢ": "z", "ß": "ss", "æ": "ae", "œ": "oe",
}  # fmt: skip

# Letters other scripts write in more than one way for one word (not look-alikes of
# Latin): Arabic hamza seats, alef maqsura and ta marbuta, Persian/Urdu kaf and yeh
# typed for Arabic ones, and Devanagari candrabindu for anusvara.
SCRIPT_FOLDS: dict[str, str] = {
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ی": "ي", "ئ": "ي", "ؤ": "و",
    "ة": "ه", "ک": "ك", "ھ": "ه", "ۀ": "ه", "ँ": "ं",
}  # fmt: skip
# Combining marks that are part of a word and stay (they are not letters to Python's
# regex, so every class of word characters below names them): Devanagari vowel signs,
# virama, anusvara and visarga; Thai vowel and tone marks.
DEVANAGARI_MARKS = "\u0900-\u0903\u093a\u093b\u093e-\u094f\u0951-\u0957\u0962\u0963"
THAI_MARKS = "\u0e31\u0e34-\u0e3a\u0e47-\u0e4e"
MARKS = DEVANAGARI_MARKS + THAI_MARKS
_KEPT_MARK = re.compile(f"[{MARKS}]")
# Characters that carry no letter: tatweel (Arabic's stretching stroke).
_DROPPED = frozenset("\u0640")

# Each letter and the digits/symbols leetspeak writes it with. A blocklist word becomes a
# pattern with these classes, so "1" may stand for "i" or "l" without guessing which. A
# "*" inside a word stands for a masked vowel ("p*rn", "s*x").
LEET: dict[str, str] = {
    "a": "a4@*",
    "b": "b8",
    "e": "e3*",
    "g": "g9",
    "i": "i1!|*",
    "l": "l1|",
    "o": "o0*",
    "s": "s5$",
    "t": "t7+",
    "u": "u*",
    "z": "z2",
}
# The reading used for ``re:`` patterns, which cannot be rewritten the same way.
LEET_READING: dict[str, str] = {
    "4": "a", "@": "a", "8": "b", "3": "e", "9": "g", "1": "i", "!": "i", "|": "l",
    "0": "o", "5": "s", "$": "s", "7": "t", "+": "t", "2": "z",
}  # fmt: skip
LEET_SYMBOLS = "@$!|+*"
# One character of a word: a letter or digit, a kept combining mark, a leetspeak symbol.
GLYPH = rf"[^\W_]|[{MARKS}@$!|+*]"
# The same in a view, where "_" has already become a space: one class, which a regex
# compiles and runs faster than an alternation.
VIEW_GLYPH = rf"[\w{MARKS}@$!|+*]"
NOT_GLYPH_RUN = re.compile(rf"(?:(?![{MARKS}@$!|+*])[\W_])+")
_PUNCT_BETWEEN_GLYPHS = re.compile(rf"(?<={GLYPH})(?:(?![{MARKS}@$!|+*])[^\s\w]|_)+(?={GLYPH})")
# One written letter with its marks ("नं"): what a word spelled out a letter at a time
# is spelled in.
_CLUSTER = rf"(?:[^\W_]|[@$!|+*])[{MARKS}]*"
# A run of at least two single letters separated by single spaces: "n u d e", "नं गी".
_SINGLE_GLYPH_RUN = re.compile(rf"(?<!\S)(?:{_CLUSTER} )+{_CLUSTER}(?!\S)")

# Scripts written without spaces between words: their blocklist terms are matched as
# substrings (Han, kana, Hangul, Thai; Korean is spaced, but particles attach to the
# noun).
_CJK_RANGES = (
    "\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
)
CJK = re.compile(f"[{_CJK_RANGES}]")
# What may not touch a whole word of an alphabetic script: a letter or digit of one, or
# a mark of one. A CJK or Thai character may ("porn明星"), as those scripts do not put
# spaces between words.
WORD_CHAR = f"[^\\W_{_CJK_RANGES}]|[{DEVANAGARI_MARKS}]"
# Arabic attaches "and", "so", "with", "like", "for" and the article to the next word
# ("والعارية"): an Arabic entry, written bare, may follow them.
ARABIC = re.compile("[\u0600-\u06ff]")
ARABIC_CLITICS = "(?:[وف]?(?:[بك]?ال|لل|[بكل])|[وف])?"
ARABIC_CLITIC_LETTERS = "وفبكل"


def is_mark(ch: str) -> bool:
    """Whether ``ch`` is a combining mark that stays part of its word (see MARKS)."""
    return _KEPT_MARK.match(ch) is not None


def _strip_marks(ch: str) -> str:
    # Latin, Greek, Cyrillic (and their extended blocks) lose their accents; other
    # scripts keep their characters whole.
    code = ord(ch)
    if code < 0x0530 or 0x1D00 <= code < 0x2000:
        return "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
    return ch


def fold(ch: str) -> str:
    """One character with its look-alike folded and its accents removed."""
    if ch in SCRIPT_FOLDS:
        return SCRIPT_FOLDS[ch]
    return "".join(_strip_marks(c) for c in CONFUSABLES.get(ch, ch))


def _carries_no_letter(ch: str) -> bool:
    # Format and control characters (zero-width joiners, bidi marks), tatweel, and
    # combining marks that are not part of the word: accents and stray marks on Latin,
    # Greek and Cyrillic letters ("n̴u̴d̴e̴"), Arabic and Hebrew vowel marks, the
    # Devanagari nukta. The marks of Devanagari and Thai words stay (MARKS).
    category = unicodedata.category(ch)
    if category in ("Cf", "Cc") or ch in _DROPPED:
        return True
    return category in ("Mn", "Me") and not is_mark(ch)


@functools.lru_cache(maxsize=8192)
def _fold_prompt_char(ch: str) -> str:
    # Cached: a prompt is folded a character at a time, and the same characters recur.
    if ch in "\n\t":
        return ch
    if _carries_no_letter(ch):
        return ""
    if unicodedata.category(ch) == "Nd":
        return str(unicodedata.decimal(ch))
    return fold(ch)


def normalise(text: str) -> str:
    """Fold a prompt to the form the blocklist is matched against (see the module doc)."""
    return "".join(map(_fold_prompt_char, unicodedata.normalize("NFKC", text).casefold()))


@dataclass(frozen=True)
class Views:
    """The readings of one prompt that the blocklist is searched in, each set joined by
    newlines so that one regex search covers all of them (no entry matches a newline)."""

    spaced: str
    """Separators reduced to one space; with and without punctuation inside words."""
    readings: str
    """The spaced readings, those with runs of single letters joined in place ("n u d e"
    → "nude"), and all of them with leetspeak read as letters: what patterns see."""


def _join_single_glyph_runs(spaced: str, keep_first: bool = False) -> str:
    """Runs of single letters joined into words: "z e b r a" → "zebra"; with
    ``keep_first``, the run's first letter stays a word of its own ("a z e b r a" →
    "a zebra", an article before a word spelled out)."""

    def join(match: re.Match[str]) -> str:
        run = match.group()
        if not keep_first:
            return run.replace(" ", "")
        head, _, tail = run.partition(" ")
        return f"{head} {tail.replace(' ', '')}"

    return _SINGLE_GLYPH_RUN.sub(join, spaced)


def views(text: str, allow: re.Pattern[str] | None = None) -> Views:
    """The readings of ``text``, with phrases matched by ``allow`` blanked out."""
    norm = normalise(text)
    variants: list[str] = []
    for variant in (norm, _PUNCT_BETWEEN_GLYPHS.sub("", norm)):
        spaced = NOT_GLYPH_RUN.sub(" ", variant).strip()
        variants.append(spaced)
        # A word spelled out inside a phrase ("Z E B R A crossing"): the terms of one
        # word match it spelled, a phrase is matched in these joined readings.
        if _SINGLE_GLYPH_RUN.search(spaced):
            variants += [_join_single_glyph_runs(spaced, keep) for keep in (False, True)]
    if allow is not None:
        variants = [allow.sub(" ", v) for v in variants]
    spaced_variants = list(dict.fromkeys(variants))
    readings = dict.fromkeys(spaced_variants)
    readings.update(dict.fromkeys(read_leet(r) for r in spaced_variants))
    return Views("\n".join(spaced_variants), "\n".join(readings))


def read_leet(spaced: str) -> str:
    """Leetspeak read as letters, word by word; numbers alone stay numbers."""

    def word(match: re.Match[str]) -> str:
        token = match.group()
        if not any(ch.isalpha() for ch in token):
            return token
        # Symbols at the end of a word are punctuation ("nude!"), not letters.
        core = token.rstrip(LEET_SYMBOLS)
        return "".join(LEET_READING.get(ch, ch) for ch in core) + token[len(core) :]

    return re.sub(r"\S+", word, spaced)

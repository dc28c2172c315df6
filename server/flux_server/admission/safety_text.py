# ruff: noqa: RUF001  (look-alike letters are this module's subject)
"""How the safety filter reads a prompt: one normal form, and the views it is matched in.

Normalising: Unicode NFKC (full-width and half-width forms, ligatures, mathematical and
circled letters), case folding, look-alike letters of Cyrillic, Greek and Latin folded to
one letter each, accents and zero-width characters removed. Accents are removed only from
Latin, Greek and Cyrillic letters: decomposing Japanese kana or Korean syllables would
change the word ("ド" is not "ト").

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
GLYPH = r"[^\W_]|[@$!|+*]"
NOT_GLYPH_RUN = re.compile(r"(?:(?![@$!|+*])[\W_])+")
_PUNCT_BETWEEN_GLYPHS = re.compile(rf"(?<={GLYPH})(?:(?![@$!|+*])[^\s\w]|_)+(?={GLYPH})")
# A run of at least two single characters separated by single spaces: "n u d e".
_SINGLE_GLYPH_RUN = re.compile(rf"(?<!\S)(?:(?:{GLYPH}) )+(?:{GLYPH})(?!\S)")

# Scripts written without spaces between words: their blocklist terms are matched as
# substrings (Han, kana, Hangul; Korean is spaced, but particles attach to the noun).
_CJK_RANGES = (
    "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
)
CJK = re.compile(f"[{_CJK_RANGES}]")
# What may not touch a whole word of an alphabetic script: a letter or digit of one. A
# CJK character may ("porn明星"), as those scripts do not put spaces between words.
WORD_CHAR = f"[^\\W_{_CJK_RANGES}]"


def _strip_marks(ch: str) -> str:
    # Latin, Greek, Cyrillic (and their extended blocks) lose their accents; other
    # scripts keep their characters whole.
    code = ord(ch)
    if code < 0x0530 or 0x1D00 <= code < 0x2000:
        return "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
    return ch


def fold(ch: str) -> str:
    """One character with its look-alike folded and its accents removed."""
    return "".join(_strip_marks(c) for c in CONFUSABLES.get(ch, ch))


@functools.lru_cache(maxsize=8192)
def _fold_prompt_char(ch: str) -> str:
    # Cached: a prompt is folded a character at a time, and the same characters recur.
    if ch in "\n\t":
        return ch
    # Format and control characters (zero-width joiners, bidi marks) and stray combining
    # marks ("n̴u̴d̴e̴") carry no letter.
    if unicodedata.category(ch) in ("Cf", "Cc", "Mn", "Me"):
        return ""
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


def _join_single_glyph_runs(spaced: str) -> str:
    return _SINGLE_GLYPH_RUN.sub(lambda m: m.group().replace(" ", ""), spaced)


def views(text: str, allow: re.Pattern[str] | None = None) -> Views:
    """The readings of ``text``, with phrases matched by ``allow`` blanked out."""
    norm = normalise(text)
    spaced_variants: list[str] = []
    for variant in (norm, _PUNCT_BETWEEN_GLYPHS.sub("", norm)):
        spaced = NOT_GLYPH_RUN.sub(" ", variant).strip()
        if allow is not None:
            spaced = allow.sub(" ", spaced)
        if spaced not in spaced_variants:
            spaced_variants.append(spaced)
    plain = dict.fromkeys(spaced_variants)
    plain.update(dict.fromkeys(_join_single_glyph_runs(s) for s in spaced_variants))
    readings = dict.fromkeys(plain)
    readings.update(dict.fromkeys(read_leet(r) for r in plain))
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

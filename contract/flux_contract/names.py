"""Names users type (style presets, experiments, arms) and the ASCII forms they travel in.

A preset name may be any Unicode word a user types (``水墨``), but the presets directory
is a ConfigMap mounted as is, and ConfigMap keys must match ``[-._a-zA-Z0-9]+``. A name
that already fits stays as it is (``realistic.json``); any other is written as
``xn--`` + Punycode (RFC 3492), the ACE form IDNA uses to carry Unicode labels in the DNS
alphabet (``水墨`` → ``xn--2ost86b.json``). Punycode because it is a published, reversible
standard with a codec in the standard library, it keeps the ASCII part of a mixed name
readable (``café-noir`` → ``xn--caf-noir-d1a``), and it is compact (a CJK character costs
about three key characters, where base32 of UTF-8 costs five).

Punycode copies ASCII as is, so the ASCII a name may hold is the key alphabet's own:
letters, digits, ``-``, ``_``, ``.``. Everything else that is refused cannot be a file
name, a ConfigMap key or a header-safe value: whitespace, control and format characters,
``/`` and the rest of ASCII punctuation (``=`` and ``,`` also separate the parts of the
``X-Fluxserve-Experiment`` header). Names are compared in Unicode NFC, the form input
methods produce; a name written in another form is refused with its NFC spelling.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

__all__ = [
    "ENCODED_PREFIX",
    "FILE_SUFFIX",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "check_name",
    "header_value",
    "key_to_name",
    "name_problem",
    "name_to_key",
    "normalize",
    "parse_header_value",
]

MAX_NAME_LENGTH = 63
"""Characters in a preset, experiment or arm name."""

MAX_KEY_LENGTH = 253
"""Kubernetes' limit on a ConfigMap key (a file name allows 255 bytes)."""

ENCODED_PREFIX = "xn--"
FILE_SUFFIX = ".json"
_PLAIN = re.compile(r"[A-Za-z0-9][-._A-Za-z0-9]*")
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_ASCII_ALLOWED = frozenset("-_.")
_WORD_CATEGORIES = ("L", "M", "N")  # letters, marks, numbers of any script


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a preset, an experiment or an arm; None when it can."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"at most {MAX_NAME_LENGTH} characters, got {len(name)}"
    for char in name:
        if char.isascii() and (char.isalnum() or char in _ASCII_ALLOWED):
            continue
        if not char.isascii() and unicodedata.category(char)[0] in _WORD_CATEGORIES:
            continue
        return f"{_describe(char)} is not allowed: {_why(char)}"
    nfc = unicodedata.normalize("NFC", name)
    if nfc != name:
        return f"must be in Unicode NFC form (write it as {nfc!r})"
    if len(_encode(name)) + len(FILE_SUFFIX) > MAX_KEY_LENGTH:
        return f"its ConfigMap key would be longer than {MAX_KEY_LENGTH} characters"
    return None


def check_name(name: str) -> str:
    """``name`` if it is valid, else ValueError with the reason (for pydantic validators)."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"name {name!r}: {problem}")
    return name


def normalize(name: str) -> str:
    """The form names are compared in (what a request's ``style_preset`` is looked up as)."""
    return unicodedata.normalize("NFC", name)


def _encode(name: str) -> str:
    if _PLAIN.fullmatch(name) and not name.startswith(ENCODED_PREFIX):
        return name
    return ENCODED_PREFIX + name.encode("punycode").decode("ascii")


def name_to_key(name: str) -> str:
    """The ConfigMap key and file name of the preset ``name`` (ValueError when invalid)."""
    return _encode(check_name(name)) + FILE_SUFFIX


def key_to_name(key: str) -> str | None:
    """The preset name a key or file name encodes; None for a file that is not a preset
    (hidden files such as kubelet's ``..data``, ``_``-prefixed files such as the
    experiments, other suffixes). ValueError for a preset key that does not decode."""
    if not key.endswith(FILE_SUFFIX) or key.startswith((".", "_")):
        return None
    stem = key[: -len(FILE_SUFFIX)]
    if not _KEY.fullmatch(stem):
        raise ValueError(f"file {key!r}: not a ConfigMap key")
    if not stem.startswith(ENCODED_PREFIX):
        return stem
    try:
        name = stem[len(ENCODED_PREFIX) :].encode("ascii").decode("punycode")
    except UnicodeError as exc:
        raise ValueError(f"file {key!r}: not valid Punycode after {ENCODED_PREFIX!r}") from exc
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"file {key!r}: name {name!r}: {problem}")
    if _encode(name) != stem:  # one name, one key: refuse a non-canonical spelling
        raise ValueError(f"file {key!r}: {name!r} is written {_encode(name)!r}")
    return name


def header_value(experiment: str, arm: str) -> str:
    """The ``X-Fluxserve-Experiment`` value (also gRPC metadata): ``experiment=arm``, with
    non-ASCII percent-encoded as UTF-8 (RFC 3986), since headers carry ASCII."""
    return f"{quote(experiment, safe='')}={quote(arm, safe='')}"


def parse_header_value(value: str) -> tuple[str, str]:
    """``(experiment, arm)`` from an ``X-Fluxserve-Experiment`` value."""
    experiment, sep, arm = value.partition("=")
    if not sep or not experiment or not arm:
        raise ValueError(f"not an experiment=arm value: {value!r}")
    return unquote(experiment, errors="strict"), unquote(arm, errors="strict")


def _describe(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed')})"


def _why(char: str) -> str:
    if char == "/":
        return "it separates directories in a file name"
    if char.isspace():
        return "whitespace cannot be in a ConfigMap key or a header token"
    category = unicodedata.category(char)
    if category[0] in ("C", "Z"):
        return "control, format and separator characters cannot be in a header value"
    if char.isascii():
        return "ASCII other than letters, digits, '-', '_' and '.' cannot be in a ConfigMap key"
    return "only letters, marks and digits of any script, '-', '_' and '.' make a name"

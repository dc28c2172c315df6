"""The README's shell blocks, read as data: where each is, what it runs, what it names.

Each ```bash block is preceded by a marker comment saying what the README test does
with it:

    <!-- readme: run -->               run for real, against the tiny model
    <!-- readme: REASON -->            not runnable here, for REASON (then its
                                        commands' flags, make targets and the repository
                                        files it names are checked instead)

Pure functions only: the test module runs things.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

SHELL_LANGUAGES = {"bash", "sh", "shell"}
RUN = "run"
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*readme:\s*(?P<what>.*?)\s*-->\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>\w+)\1")
_OPERATORS = {"&&", "||", "|", ";", "&", ";;", "(", ")", "|&"}


@dataclass(frozen=True)
class Block:
    line: int  # README line of the block's first line of code (1-based)
    heading: str  # the section it sits in
    marker: str | None  # "run", a reason it is not run here, or None (no marker)
    code: str

    @property
    def runnable(self) -> bool:
        return self.marker == RUN

    @property
    def where(self) -> str:
        return f"README.md block at line {self.line} (section {self.heading!r})"


def shell_blocks(text: str) -> list[Block]:
    """Every fenced shell block, with its section and the marker just before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = "(top)"
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            title = _HEADING.match(line)
            if title:
                heading = title["title"]
            i += 1
            continue
        indent = fence["indent"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if fence["lang"] in SHELL_LANGUAGES:
            rows = lines[i + 1 : end]
            body = [row[len(indent) :] if row.startswith(indent) else row for row in rows]
            blocks.append(Block(i + 2, heading, _marker_before(lines, i), "\n".join(body) + "\n"))
        i = end + 1
    return blocks


def _marker_before(lines: list[str], fence_index: int) -> str | None:
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    found = _MARKER.match(lines[j]) if j >= 0 else None
    return found["what"] if found else None


def commands(code: str) -> Iterator[list[str]]:
    """The simple commands of a block (words, quotes removed), heredoc bodies skipped."""
    logical: list[str] = []
    pending = ""
    heredoc_end: str | None = None
    for raw in code.splitlines():
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        pending += raw
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        opened = _HEREDOC.search(pending)
        if opened:
            heredoc_end = opened["word"]
            pending = pending[: opened.start()]
        logical.append(pending)
        pending = ""
    for line in logical:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in lexer:
            if token in _OPERATORS or set(token) <= set("&|;()<>"):
                if words:
                    yield words
                words = []
            else:
                words.append(token)
        if words:
            yield words


@dataclass(frozen=True)
class ModuleCall:
    module: str  # e.g. flux_server, flux_server.tiny_model
    words: list[str]  # what follows `python -m MODULE`


def module_calls(code: str, prefix: str = "flux_") -> Iterator[ModuleCall]:
    """`python -m flux_*` invocations (python, python3, or a path to either)."""
    for words in commands(code):
        words = [w for w in words if "=" not in w or w.startswith("-")]  # drop VAR=value
        for k in range(len(words) - 2):
            program = words[k].rsplit("/", 1)[-1]
            if re.fullmatch(r"python(3(\.\d+)?)?", program) and words[k + 1] == "-m":
                if words[k + 2].startswith(prefix):
                    yield ModuleCall(words[k + 2], words[k + 3 :])
                break


def make_targets(code: str) -> Iterator[str]:
    for words in commands(code):
        if words and words[0] == "make":
            yield from (w for w in words[1:] if not w.startswith("-") and "=" not in w)


def repository_paths(code: str, top_level: set[str]) -> Iterator[str]:
    """Words that name a path inside the repository (first part a top-level entry)."""
    for words in commands(code):
        for word in words:
            for part in word.split("="):
                if "://" in part or part.startswith("-"):
                    continue
                first = part.split("/", 1)[0]
                if "/" in part and first in top_level:
                    yield part


def subcommand_choices(help_text: str) -> set[str]:
    """The subcommands argparse lists under positional arguments: `  {run,render,history}`."""
    found = re.search(r"^\s+\{([\w,-]+)\}(\s|$)", help_text, re.MULTILINE)
    return set(found[1].split(",")) if found else set()


def flags_of(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)]


def names_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None

"""Measure the safety filter on labelled prompts: precision and recall per language.

Each file is ``label<TAB>prompt`` a line (label ``harmful`` or ``benign``; ``#`` lines
are comments) and is named for its language (``zh.tsv``). Prints one row a file and one
for all of them together, plus the prompts per second the filter checked:

    python -m flux_server.safety_eval tests/features/data/safety_prompts/*.tsv
    python -m flux_server.safety_eval --blocklist extra.txt --errors my_prompts.tsv
    python -m flux_server.safety_eval --safety-model /models/safety --safety-threshold 0.8 \
        tests/features/data/safety_prompts/holdout2/*.tsv   # the lists and a classifier
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flux_server.admission.safety import DEFAULT_THRESHOLD, BlocklistError, SafetyFilter

LABELS = ("harmful", "benign")


@dataclass(frozen=True)
class LabelledPrompt:
    label: str
    prompt: str


@dataclass(frozen=True)
class Scores:
    """Counts for one set; "positive" means refused, the right answer for harmful."""

    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int

    @property
    def total(self) -> int:
        return self.true_pos + self.false_pos + self.false_neg + self.true_neg

    @property
    def precision(self) -> float:
        refused = self.true_pos + self.false_pos
        return self.true_pos / refused if refused else 1.0

    @property
    def recall(self) -> float:
        harmful = self.true_pos + self.false_neg
        return self.true_pos / harmful if harmful else 1.0

    def __add__(self, other: Scores) -> Scores:
        return Scores(
            self.true_pos + other.true_pos,
            self.false_pos + other.false_pos,
            self.false_neg + other.false_neg,
            self.true_neg + other.true_neg,
        )


def read_labelled(path: Path) -> list[LabelledPrompt]:
    """The prompts of one file; a bad line is a ValueError naming the file and line."""
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        label, sep, prompt = line.partition("\t")
        if not sep or label not in LABELS:
            raise ValueError(f"{path}:{number}: expected 'harmful|benign<TAB>prompt'")
        rows.append(LabelledPrompt(label, prompt))
    return rows


def score(
    safety: SafetyFilter, prompts: Iterable[LabelledPrompt]
) -> tuple[Scores, list[LabelledPrompt]]:
    """The counts for ``prompts`` and the prompts the filter got wrong."""
    tp = fp = fn = tn = 0
    wrong = []
    for item in prompts:
        refused = not safety.check(item.prompt).allowed
        harmful = item.label == "harmful"
        tp += refused and harmful
        fp += refused and not harmful
        fn += harmful and not refused
        tn += not refused and not harmful
        if refused != harmful:
            wrong.append(item)
    return Scores(tp, fp, fn, tn), wrong


def table(rows: Sequence[tuple[str, Scores]]) -> str:
    """A Markdown table: one row a language, then all of them together."""
    lines = [
        "| language | prompts | harmful | benign | precision | recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total = Scores(0, 0, 0, 0)
    for name, s in rows:
        total = total + s
        lines.append(_row(name, s))
    lines.append(_row("all", total))
    return "\n".join(lines)


def _row(name: str, s: Scores) -> str:
    harmful = s.true_pos + s.false_neg
    return (
        f"| {name} | {s.total} | {harmful} | {s.total - harmful} "
        f"| {s.precision:.3f} | {s.recall:.3f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flux_server.safety_eval", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="labelled prompt files (LANG.tsv)")
    parser.add_argument("--blocklist", type=Path, help="a list that extends the default one")
    parser.add_argument("--errors", action="store_true", help="print the misjudged prompts")
    parser.add_argument(
        "--safety-model", help="a text-classification model checked after the lists (a directory)"
    )
    parser.add_argument(
        "--safety-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"the classifier's refusal score (default {DEFAULT_THRESHOLD})",
    )
    args = parser.parse_args(argv)
    try:
        safety = SafetyFilter.from_files(
            args.blocklist, args.safety_model, threshold=args.safety_threshold
        )
        sets = [(path.stem, read_labelled(path)) for path in args.files]
    except (BlocklistError, OSError, ValueError) as exc:
        print(f"safety_eval: {exc}", file=sys.stderr)
        return 2
    rows = []
    started = time.perf_counter()
    for name, prompts in sets:
        scores, wrong = score(safety, prompts)
        rows.append((name, scores))
        if args.errors:
            for item in wrong:
                print(f"{name}\t{item.label}\t{item.prompt}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(table(rows))
    count = sum(len(prompts) for _, prompts in sets)
    print(f"\n{count} prompts in {elapsed:.2f} s: {count / elapsed:,.0f} prompts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

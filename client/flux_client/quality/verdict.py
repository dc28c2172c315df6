"""The gate's scores, thresholds and verdict, as plain data: no torch, no I/O.

The checks (each skipped when there is nothing to measure, e.g. no VQA question):

- ``failure-rate``: share of items the candidate failed to draw, at most ``max_failure_rate``;
- ``clip-score-drop``: stable's mean CLIP score minus the candidate's, over the items both
  drew, at most ``max_clip_drop``; and ``clip-score`` (the candidate's mean) at least
  ``min_clip_score`` when that is set;
- ``similarity``: mean cosine similarity of the two releases' images of each item, at least
  ``min_similarity``;
- ``vqa-pass-rate``: share of the VQA questions the candidate's images pass, at least
  ``min_vqa_pass_rate`` (an item the candidate failed to draw fails its question).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Any, Literal


@dataclass(frozen=True)
class Thresholds:
    """The bounds of ``spec.rollout.canary.analysis.quality`` (the same flags)."""

    max_clip_drop: float = 2.0
    min_similarity: float = 0.5
    max_failure_rate: float = 0.05
    min_vqa_pass_rate: float = 0.9
    min_clip_score: float | None = None


@dataclass
class Scores:
    """What was measured; None where nothing could be."""

    items: int
    candidate_failures: int
    stable_failures: int
    compared: int
    """Items both releases drew (the CLIP and similarity scores are over these)."""
    failure_rate: float
    clip_score_stable: float | None = None
    clip_score_candidate: float | None = None
    similarity: float | None = None
    vqa_questions: int = 0
    vqa_passed: int = 0

    @property
    def clip_score_drop(self) -> float | None:
        if self.clip_score_stable is None or self.clip_score_candidate is None:
            return None
        return self.clip_score_stable - self.clip_score_candidate

    @property
    def vqa_pass_rate(self) -> float | None:
        return self.vqa_passed / self.vqa_questions if self.vqa_questions else None


@dataclass(frozen=True)
class Check:
    """One threshold: the value measured, its bound (``min`` or ``max``), and the outcome."""

    name: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool

    @property
    def bound(self) -> str:
        return f"max {self.max:g}" if self.max is not None else f"min {self.min:g}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "bound": self.bound}


@dataclass
class Verdict:
    scores: Scores
    thresholds: Thresholds
    checks: list[Check]
    per_item: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> Literal["pass", "fail"]:
        return "pass" if all(c.passed for c in self.checks) else "fail"

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        scores = asdict(self.scores)
        scores["clip_score_drop"] = self.scores.clip_score_drop
        scores["vqa_pass_rate"] = self.scores.vqa_pass_rate
        return {
            "verdict": self.result,
            "scores": scores,
            "thresholds": asdict(self.thresholds),
            "checks": [c.to_json() for c in self.checks],
            "items": self.per_item,
        }

    def summary(self) -> str:
        """One line for a log: the verdict and what failed (or every check, on a pass)."""
        failed = self.failed() or self.checks
        parts = [f"{c.name}={_num(c.value)} ({c.bound})" for c in failed]
        return f"quality {self.result}: " + ", ".join(parts)

    def termination_message(self) -> dict[str, Any]:
        """What a Job's termination message carries for the operator: the verdict, the
        summary line and the failed checks (name, value, min, max)."""
        failed = [
            {"name": c.name, "value": c.value, "min": c.min, "max": c.max} for c in self.failed()
        ]
        return {"verdict": self.result, "message": self.summary(), "failed": failed}


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def mean(values: Sequence[float]) -> float | None:
    return fmean(values) if values else None


def judge(scores: Scores, thresholds: Thresholds) -> list[Check]:
    """Every check that has something to measure, passed or not."""
    t = thresholds

    def at_most(name: str, value: float, bound: float) -> Check:
        return Check(name, value, None, bound, value <= bound)

    def at_least(name: str, value: float, bound: float) -> Check:
        return Check(name, value, bound, None, value >= bound)

    checks = [at_most("failure-rate", scores.failure_rate, t.max_failure_rate)]
    drop = scores.clip_score_drop
    if drop is not None:
        checks.append(at_most("clip-score-drop", drop, t.max_clip_drop))
    clip = scores.clip_score_candidate
    if t.min_clip_score is not None and clip is not None:
        checks.append(at_least("clip-score", clip, t.min_clip_score))
    if scores.similarity is not None:
        checks.append(at_least("similarity", scores.similarity, t.min_similarity))
    rate = scores.vqa_pass_rate
    if rate is not None:
        checks.append(at_least("vqa-pass-rate", rate, t.min_vqa_pass_rate))
    return checks

"""Score what :mod:`collect` gathered and judge it: the gate without its command line."""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from flux_client.quality.collect import ItemRun
from flux_client.quality.verdict import Scores, Thresholds, Verdict, judge, mean


class CannotJudge(Exception):
    """The gate has nothing to compare (the stable release drew nothing): neither pass nor
    fail, exit status 2."""


class ClipScoring(Protocol):
    def scores(self, images: list[Image.Image], prompts: list[str]) -> list[float]: ...


class SimilarityScoring(Protocol):
    def similarities(self, first: list[Image.Image], second: list[Image.Image]) -> list[float]: ...


def score(
    runs: list[ItemRun],
    clip: ClipScoring,
    similarity: SimilarityScoring,
    thresholds: Thresholds,
    batch: int = 8,
) -> Verdict:
    """The scores of ``runs``, every check, and a line per item."""
    total = len(runs)
    stable_failures = sum(r.stable.image is None for r in runs)
    if total and stable_failures == total:
        first = runs[0].stable.error
        raise CannotJudge(f"the stable release drew none of the {total} golden images: {first}")
    candidate_failures = sum(r.candidate.image is None for r in runs)
    both = [r for r in runs if r.stable.image is not None and r.candidate.image is not None]
    prompts = [r.item.prompt.prompt for r in both]
    stable_images = [r.stable.image for r in both if r.stable.image is not None]
    candidate_images = [r.candidate.image for r in both if r.candidate.image is not None]
    clip_stable = _batched(clip.scores, stable_images, prompts, batch)
    clip_candidate = _batched(clip.scores, candidate_images, prompts, batch)
    similar = _batched(similarity.similarities, stable_images, candidate_images, batch)
    asked = [r for r in runs if r.vqa_passed is not None]
    scores = Scores(
        items=total,
        candidate_failures=candidate_failures,
        stable_failures=stable_failures,
        compared=len(both),
        failure_rate=candidate_failures / total if total else 0.0,
        clip_score_stable=mean(clip_stable),
        clip_score_candidate=mean(clip_candidate),
        similarity=mean(similar),
        vqa_questions=len(asked),
        vqa_passed=sum(bool(r.vqa_passed) for r in asked),
    )
    per_item = _per_item(runs, both, clip_stable, clip_candidate, similar)
    return Verdict(scores, thresholds, judge(scores, thresholds), per_item)


def _batched(fn: Any, first: list[Any], second: list[Any], size: int) -> list[float]:
    """``fn`` over pairs of slices of ``first`` and ``second``: a golden set of hundreds
    of images is scored in batches that fit a GPU's memory."""
    out: list[float] = []
    for start in range(0, len(first), size):
        out += fn(first[start : start + size], second[start : start + size])
    return out


def _per_item(
    runs: list[ItemRun],
    both: list[ItemRun],
    clip_stable: list[float],
    clip_candidate: list[float],
    similar: list[float],
) -> list[dict[str, Any]]:
    scored = {
        id(r): (cs, cc, s)
        for r, cs, cc, s in zip(both, clip_stable, clip_candidate, similar, strict=True)
    }
    rows = []
    for r in runs:
        cs, cc, s = scored.get(id(r), (None, None, None))
        rows.append(
            {
                "prompt": r.item.prompt.prompt,
                "seed": r.item.seed,
                "preset": r.item.preset,
                "stable_error": r.stable.error,
                "candidate_error": r.candidate.error,
                "clip_score_stable": cs,
                "clip_score_candidate": cc,
                "similarity": s,
                "question": r.item.prompt.question,
                "answer": r.answer,
                "vqa_error": r.vqa_error,
                "vqa_passed": r.vqa_passed,
            }
        )
    return rows

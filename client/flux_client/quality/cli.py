"""``python -m flux_client quality``: the quality gate from a shell, a CI job or a Job.

    python -m flux_client quality --stable http://flux:8080 --candidate http://flux-canary:8080 \\
        --golden golden.yaml [--json]

Exit status: 0 the candidate passes, 1 it fails a threshold, 2 the gate could not judge
(a bad flag or golden set, a model that does not load, a stable release that drew
nothing): one line on stderr says why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from flux_client.quality.collect import collect, parse_endpoint
from flux_client.quality.golden import load_golden
from flux_client.quality.verdict import Thresholds, Verdict

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_SIMILARITY_MODEL = "facebook/dinov2-small"
TERMINATION_MESSAGE_LIMIT = 4096
"""Bytes Kubernetes keeps of a container's termination message."""

_BOUNDS: dict[str, tuple[float, float]] = {
    "max_clip_drop": (0.0, 100.0),
    "min_clip_score": (0.0, 100.0),
    "min_similarity": (-1.0, 1.0),
    "max_failure_rate": (0.0, 1.0),
    "min_vqa_pass_rate": (0.0, 1.0),
}


def add_quality_parser(commands: Any) -> None:
    defaults = Thresholds()
    quality = commands.add_parser(
        "quality",
        help="score a candidate release against the stable one on a golden set "
        "(exit 0 pass, 1 fail, 2 cannot judge)",
    )
    quality.add_argument("--stable", required=True, metavar="URL", help="http(s):// or grpc://")
    quality.add_argument("--candidate", required=True, metavar="URL", help="the release tested")
    quality.add_argument("--golden", required=True, type=Path, metavar="FILE", help="YAML/JSON")
    quality.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, help="hub id or directory")
    quality.add_argument(
        "--similarity-model", default=DEFAULT_SIMILARITY_MODEL, help="hub id or directory (DINO)"
    )
    for flag, default, what in (
        (
            "--max-clip-drop",
            defaults.max_clip_drop,
            "stable's mean CLIP score less the candidate's",
        ),
        ("--min-similarity", defaults.min_similarity, "mean cosine similarity to stable's images"),
        ("--max-failure-rate", defaults.max_failure_rate, "share of images the candidate failed"),
        ("--min-vqa-pass-rate", defaults.min_vqa_pass_rate, "share of VQA questions passed"),
        ("--min-clip-score", None, "the candidate's mean CLIP score (default: not checked)"),
    ):
        quality.add_argument(flag, type=float, default=default, help=f"{what} ({default})")
    quality.add_argument("--json", action="store_true", help="print JSON, not a table")
    quality.add_argument("--device", help="torch device of the scorers (default: cuda if any)")
    quality.add_argument("--concurrency", type=int, default=2, help="items in flight (2)")
    quality.add_argument(
        "--termination-log",
        type=Path,
        metavar="PATH",
        help="also write the verdict here as one line of JSON (a Job's /dev/termination-log)",
    )


def _thresholds(args: argparse.Namespace) -> Thresholds:
    for name, (low, high) in _BOUNDS.items():
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value:g}: must be between {low:g} and {high:g}")
    if args.concurrency < 1 or args.concurrency > 64:
        raise ValueError(f"--concurrency {args.concurrency}: must be between 1 and 64")
    return Thresholds(
        max_clip_drop=args.max_clip_drop,
        min_similarity=args.min_similarity,
        max_failure_rate=args.max_failure_rate,
        min_vqa_pass_rate=args.min_vqa_pass_rate,
        min_clip_score=args.min_clip_score,
    )


def evaluate(args: argparse.Namespace, api_key: str | None) -> Verdict:
    """Check the inputs, load the scorers, run the golden set, score it. ValueError (and
    ``CannotJudge``) for what makes a verdict impossible."""
    from flux_client.quality.gate import score
    from flux_client.quality.scorers import ClipScorer, SimilarityScorer

    thresholds = _thresholds(args)
    golden = load_golden(args.golden)
    stable = parse_endpoint("--stable", args.stable)
    candidate = parse_endpoint("--candidate", args.candidate)
    # Models first: a wrong path fails in seconds, before minutes of generation.
    clip = ClipScorer(args.clip_model, args.device)
    similarity = SimilarityScorer(args.similarity_model, args.device)
    runs = asyncio.run(
        collect(
            golden,
            stable,
            candidate,
            api_key=api_key,
            timeout=args.timeout,
            concurrency=args.concurrency,
        )
    )
    return score(runs, clip, similarity, thresholds)


def run_quality(args: argparse.Namespace, api_key: str | None) -> int:
    from flux_client.quality.gate import CannotJudge

    try:
        verdict = evaluate(args, api_key)
    except (ValueError, CannotJudge) as exc:
        error = {"verdict": "error", "message": f"quality error: {exc}", "failed": []}
        _termination_log(args.termination_log, error)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _termination_log(args.termination_log, verdict.termination_message())
    print(json.dumps(verdict.to_json(), indent=2) if args.json else render_table(verdict))
    return 0 if verdict.result == "pass" else 1


def _termination_log(path: Path | None, message: dict[str, Any]) -> None:
    """One line of JSON, within what Kubernetes keeps of a termination message (the
    summary is cut first: the verdict and the failed checks are what the operator reads)."""
    if path is None:
        return
    data = json.dumps(message).encode()
    if len(data) > TERMINATION_MESSAGE_LIMIT:
        message = {**message, "message": str(message["message"])[:1024]}
        data = json.dumps(message).encode()[:TERMINATION_MESSAGE_LIMIT]
    try:
        path.write_bytes(data)
    except OSError as exc:  # the verdict is also in the exit status and on stdout
        print(f"warning: --termination-log {path}: {exc}", file=sys.stderr)


def render_table(verdict: Verdict) -> str:
    s = verdict.scores
    lines = [
        f"quality gate: {verdict.result.upper()} ({s.items} golden images per release, "
        f"{s.compared} compared, stable failed {s.stable_failures})",
        f"{'check':<17}{'value':>10}  {'bound':<12}result",
    ]
    for c in verdict.checks:
        value = "none" if c.value is None else f"{c.value:.4g}"
        lines.append(f"{c.name:<17}{value:>10}  {c.bound:<12}{'pass' if c.passed else 'FAIL'}")
    if s.clip_score_stable is not None and s.clip_score_candidate is not None:
        lines.append(
            f"CLIP score: stable {s.clip_score_stable:.2f}, candidate {s.clip_score_candidate:.2f}"
        )
    for row in verdict.per_item:
        if row["candidate_error"]:
            lines.append(f"  seed {row['seed']} {row['prompt'][:40]!r}: {row['candidate_error']}")
    return "\n".join(lines)

"""The quality gate: the same golden prompts and seeds on the stable release and a
candidate, scored for prompt adherence (CLIP), distance from stable (DINOv2 similarity),
failures and VQA-checked rules; ``python -m flux_client quality`` runs it.

Collecting images needs only the SDK; scoring needs the ``quality`` extra (torch and
transformers), imported by :mod:`flux_client.quality.scorers` alone, when the gate runs.
"""

from flux_client.quality.golden import GoldenItem, GoldenPrompt, GoldenSet, GoldenSetError
from flux_client.quality.verdict import Check, Scores, Thresholds, Verdict

__all__ = [
    "Check",
    "GoldenItem",
    "GoldenPrompt",
    "GoldenSet",
    "GoldenSetError",
    "Scores",
    "Thresholds",
    "Verdict",
]

"""The image-quality gate: ``spec.rollout.canary.analysis.quality``.

A release that serves fast, error-free and ugly images passes every Prometheus query.
The quality gate runs the same golden prompts and seeds against the stable release and
the candidate (the canary track, or staging before production) and scores them with
``python -m flux_client quality``. The canary's analysis and Kargo's verification both
run that command with the arguments :func:`gate_arguments` derives from this model, so
a threshold has one source.
"""

from __future__ import annotations

from pydantic import Field

from flux_operator.spec.base import Duration, Fraction, ObjectName, _Model
from flux_operator.spec.sources import SecretKeyRef

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_SIMILARITY_MODEL = "facebook/dinov2-small"
GOLDEN_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class QualityGate(_Model):
    """Scores the candidate against the stable release on a golden set of prompts."""

    golden_config_map: ObjectName = Field(
        description="ConfigMap holding the golden set (prompts, seeds, the preset under "
        "test, optional VQA questions), synced from the presets' git repository.",
    )
    golden_key: str = Field(
        default="golden.yaml",
        min_length=1,
        max_length=253,
        pattern=GOLDEN_KEY_PATTERN,
        description="Key of the golden set in that ConfigMap.",
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Image that runs the gate; default: the release's server image "
        "(it ships flux_client).",
    )
    clip_model: str = Field(
        default=DEFAULT_CLIP_MODEL,
        min_length=1,
        max_length=512,
        description="CLIP model (hub id or a path on the model cache) that scores prompt "
        "adherence.",
    )
    similarity_model: str = Field(
        default=DEFAULT_SIMILARITY_MODEL,
        min_length=1,
        max_length=512,
        description="Image model (DINO) whose embeddings measure the distance from stable.",
    )
    min_clip_score: float | None = Field(
        default=None,
        ge=0.0,
        le=100.0,
        description="The candidate's mean CLIP score may not fall below this.",
    )
    max_clip_score_drop: float = Field(
        default=2.0,
        ge=0.0,
        le=100.0,
        description="The candidate's mean CLIP score may be at most this far below stable's.",
    )
    min_similarity: Fraction = Field(
        default=0.5,
        description="Mean cosine similarity of candidate and stable images for the same "
        "prompt and seed; lower means everything changed.",
    )
    max_failure_rate: Fraction = Field(
        default=0.05, description="Share of golden prompts the candidate may fail to answer."
    )
    min_vqa_pass_rate: Fraction = Field(
        default=0.9,
        description="Share of the golden set's VQA questions the candidate's images must "
        "pass (answered by the server's own /vqa).",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding an API key the gate sends to both releases (as "
        "FLUXSERVE_API_KEY): needed when spec.apiKeys makes the server ask for one.",
    )
    timeout: Duration = Field(
        default="15m",
        description="How long one gate run may take before it counts as a failure.",
    )


def gate_arguments(gate: QualityGate, *, stable_url: str, candidate_url: str) -> list[str]:
    """The ``flux_client quality`` command line for this gate (the container's args)."""
    args = [
        "python",
        "-m",
        "flux_client",
        "quality",
        "--stable",
        stable_url,
        "--candidate",
        candidate_url,
        "--golden",
        f"/golden/{gate.golden_key}",
        "--clip-model",
        gate.clip_model,
        "--similarity-model",
        gate.similarity_model,
        "--max-clip-drop",
        repr(gate.max_clip_score_drop),
        "--min-similarity",
        repr(gate.min_similarity),
        "--max-failure-rate",
        repr(gate.max_failure_rate),
        "--min-vqa-pass-rate",
        repr(gate.min_vqa_pass_rate),
        "--json",
    ]
    if gate.min_clip_score is not None:
        args += ["--min-clip-score", repr(gate.min_clip_score)]
    return args

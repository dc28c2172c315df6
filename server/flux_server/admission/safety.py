"""The prompt safety filter: a blocklist that sees through disguises, a rule for minors in
a sexual context, and an optional text-classification model.

A prompt (after preset expansion) is checked before it is queued; a rejected prompt never
reaches the GPU. How a prompt is read is in ``safety_text`` (normalising: width, case,
look-alike letters, accents, leetspeak, repeated and split letters); the list format and
the matcher are in ``safety_blocklist``; the lists that ship, one a language, are
``data/blocklist*.txt``. Words are matched whole in alphabetic scripts, so innocent words
that merely contain a blocked one ("Scunthorpe", "therapist", "assassin", "Sussex") pass;
Chinese, Japanese and Korean terms are matched anywhere in the text.

The minors rule refuses a prompt that names a minor (a word, a school grade or year, or
an age under 18 written as a word or a number) together with any sexual-context term,
even where each alone passes; its reason code is ``minor_sexual``. The hate rule, built
the same way, refuses a protected group named together with dehumanising or violent
framing ("... as rats", "exterminate ..."); its reason code is ``hate``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from flux_server.admission.safety_blocklist import (
    DEFAULT_BLOCKLIST_RESOURCE,
    Blocklist,
    BlocklistError,
    build_blocklist,
    default_blocklist,
    parse_blocklist,
)
from flux_server.admission.safety_text import normalise

__all__ = [
    "DEFAULT_BLOCKLIST_RESOURCE",
    "DEFAULT_THRESHOLD",
    "SAFETY_REASONS",
    "Blocklist",
    "BlocklistError",
    "SafetyClassifier",
    "SafetyDecision",
    "SafetyFilter",
    "SafetyModelError",
    "build_blocklist",
    "default_blocklist",
    "normalise",
    "parse_blocklist",
]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5

SafetyReason = Literal["blocklist", "minor_sexual", "hate", "classifier"]
SAFETY_REASONS: tuple[SafetyReason, ...] = ("blocklist", "minor_sexual", "hate", "classifier")
"""Every reason code a refusal can carry (a metric label: pre-create its series)."""


class SafetyDecision(BaseModel):
    """The verdict on one prompt."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    reason: SafetyReason | None = None
    """Low-cardinality reason code (a metric label): ``blocklist``, ``minor_sexual``,
    ``hate`` or ``classifier``."""
    matched: str | None = None
    """The blocklist entry that matched (``MINOR + SEXUAL`` for the minors rule, ``GROUP +
    HATE`` for the hate rule), or the classifier's label and score."""


# Labels a text classifier uses for harmless text; every other label counts as a flag.
SAFE_LABELS = frozenset(
    {"safe", "sfw", "neutral", "normal", "ok", "non-toxic", "non_toxic", "not_toxic", "label_0"}
)


class SafetyModelError(ValueError):
    """A safety model that cannot be loaded; the message names it."""


class SafetyClassifier:
    """A transformers text-classification model, from a local directory or a hub id
    (read with ``HF_TOKEN`` like the main model).

    A prompt is flagged when any label outside ``SAFE_LABELS`` scores at or above the
    threshold. For a two-class model without label names, ``LABEL_1`` is the unsafe one.
    """

    def __init__(self, model: str | Path, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"safety threshold must be in (0, 1], got {threshold}")
        name = str(model)
        # Something written as a path must be a directory here; anything else may be a
        # hub id, which transformers resolves (and reports on) itself.
        looks_like_path = name.startswith(("/", ".", "~")) or Path(name).exists()
        if looks_like_path and not Path(name).expanduser().is_dir():
            raise SafetyModelError(f"safety model {name}: not a directory")
        self.model = name
        self.threshold = threshold
        from transformers import pipeline  # heavy import, only when a model is configured

        try:
            self._pipe = pipeline(
                "text-classification", model=name, tokenizer=name, top_k=None, device="cpu"
            )
        except (OSError, ValueError) as exc:
            raise SafetyModelError(f"safety model {name}: cannot load it: {exc}") from exc

    def flag(self, text: str) -> tuple[str, float] | None:
        """The highest-scoring unsafe label at or above the threshold, or None."""
        result: Any = self._pipe(text, truncation=True)
        scores = result[0] if result and isinstance(result[0], list) else result
        flagged = [
            (str(item["label"]), float(item["score"]))
            for item in scores
            if str(item["label"]).casefold() not in SAFE_LABELS
            and float(item["score"]) >= self.threshold
        ]
        return max(flagged, key=lambda item: item[1]) if flagged else None


class SafetyFilter:
    """Blocklist plus optional classifier. ``check`` is synchronous and, with a model,
    CPU-bound: call it through ``asyncio.to_thread`` from async code."""

    def __init__(self, blocklist: Blocklist, classifier: SafetyClassifier | None = None) -> None:
        self.blocklist = blocklist
        self.classifier = classifier

    @classmethod
    def from_files(
        cls,
        blocklist: Path | str | None = None,
        model: str | Path | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        include_default: bool = True,
    ) -> SafetyFilter:
        """The default list extended by ``blocklist`` (a file), plus ``model`` if given."""
        entries = default_blocklist() if include_default else []
        if blocklist is not None:
            path = Path(blocklist)
            try:
                text = path.read_text("utf-8")
            except OSError as exc:
                raise BlocklistError(f"blocklist {path}: {exc.strerror or exc}") from exc
            entries += parse_blocklist(text.splitlines(), source=str(path))
        compiled = build_blocklist(entries)
        classifier = SafetyClassifier(model, threshold) if model is not None else None
        log.info(
            "safety filter ready",
            extra={"entries": len(compiled), "model": str(model) if model else None},
        )
        return cls(compiled, classifier)

    def check(self, text: str) -> SafetyDecision:
        """Allow or reject one prompt (the expanded prompt; negative prompts need no check)."""
        refused = self.blocklist.check(text)
        if refused is not None:
            reason, matched = refused
            return SafetyDecision(allowed=False, reason=reason, matched=matched)
        if self.classifier is not None:
            flag = self.classifier.flag(text)
            if flag is not None:
                label, score = flag
                return SafetyDecision(
                    allowed=False, reason="classifier", matched=f"{label}:{score:.3f}"
                )
        return SafetyDecision(allowed=True)

"""The golden set: the prompts and seeds the quality gate sends to both releases.

It is a YAML or JSON file kept in the presets' git repository beside the presets it
tests (the operator mounts it from a ConfigMap at ``/golden``)::

    preset: watercolor          # the preset under test (each prompt may name another)
    width: 1024
    height: 1024
    steps: 28
    seeds: [1, 2]               # every prompt runs once per seed
    prompts:
      - prompt: a lighthouse at dawn
      - prompt: a coffee cup with the shop's logo
        seeds: [7]
        question: Is there a tag in the top right?   # answered by the server's /vqa
        expect: [yes]           # YAML reads a bare yes/no as true/false: taken as "yes"/"no"

Keys may be written camelCase (``guidanceScale``) or snake_case. A file that does not
parse, or breaks a rule, raises :class:`GoldenSetError` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

MAX_PROMPTS = 256
MAX_SEEDS = 16
MAX_ITEMS = 1024
"""Images per release in one run: a golden set is a sample, not a benchmark."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class GoldenPrompt(_Model):
    """One prompt, run once per seed on both releases."""

    prompt: str = Field(min_length=1, max_length=2000, description="What to draw.")
    seeds: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SEEDS,
        description="Seeds for this prompt; default: the set's seeds.",
    )
    preset: str | None = Field(
        default=None, min_length=1, max_length=253, description="Preset; default: the set's."
    )
    question: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="A question the server's /vqa answers about the candidate's image.",
    )
    expect: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Answers that pass (case-insensitive, as whole words of the answer).",
    )

    @field_validator("expect", mode="before")
    @classmethod
    def _yes_no(cls, value: Any) -> Any:
        # YAML 1.1 (PyYAML) reads `expect: [yes]` as [True]: the writer meant the word.
        if isinstance(value, list):
            return [("yes" if v else "no") if isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _question_and_expect(self) -> GoldenPrompt:
        if (self.question is None) != (self.expect is None):
            raise ValueError("question and expect go together")
        if self.seeds is not None and any(s < 0 or s >= 2**32 for s in self.seeds):
            raise ValueError("seeds must be between 0 and 2**32 - 1")
        return self


class GoldenSet(_Model):
    """Prompts, seeds, the preset under test and the size every image is drawn at."""

    prompts: list[GoldenPrompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    preset: str | None = Field(default=None, min_length=1, max_length=253)
    width: int | None = Field(default=None, ge=16, le=4096, multiple_of=16)
    height: int | None = Field(default=None, ge=16, le=4096, multiple_of=16)
    steps: int | None = Field(default=None, ge=1, le=100)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0)

    @model_validator(mode="after")
    def _bounds(self) -> GoldenSet:
        if any(s < 0 or s >= 2**32 for s in self.seeds):
            raise ValueError("seeds must be between 0 and 2**32 - 1")
        if len(self.items()) > MAX_ITEMS:
            raise ValueError(f"{len(self.items())} prompt-seed pairs: at most {MAX_ITEMS}")
        return self

    def items(self) -> list[GoldenItem]:
        """Every (prompt, seed) pair, in file order."""
        return [
            GoldenItem(index, prompt, seed, prompt.preset or self.preset)
            for index, prompt in enumerate(self.prompts)
            for seed in (prompt.seeds or self.seeds)
        ]

    def options(self, item: GoldenItem) -> dict[str, Any]:
        """The generation options of ``item`` (for ``generate_images``)."""
        options: dict[str, Any] = {
            "seed": item.seed,
            "style_preset": item.preset,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
        }
        return {k: v for k, v in options.items() if v is not None}


@dataclass(frozen=True)
class GoldenItem:
    """One prompt at one seed."""

    index: int
    prompt: GoldenPrompt
    seed: int
    preset: str | None

    @property
    def key(self) -> str:
        return f"prompts.{self.index} seed {self.seed}"


class GoldenSetError(ValueError):
    """The golden set file cannot be read or breaks a rule; the message names the field."""


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_golden(text: str, source: str = "golden set") -> GoldenSet:
    """Parse YAML (or JSON, which is YAML) into a :class:`GoldenSet`."""
    try:
        data = _load_yaml(text)
    except ValueError as exc:
        raise GoldenSetError(f"{source}: not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GoldenSetError(
            f"{source}: expected a mapping with prompts, got {type(data).__name__}"
        )
    try:
        return GoldenSet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field(tuple(first["loc"]))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise GoldenSetError(f"{source}: {field}: {first['msg']}{more}") from None


def load_golden(path: Path) -> GoldenSet:
    """Read and validate the golden set file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenSetError(f"golden set {path}: cannot read it: {exc}") from None
    return parse_golden(text, f"golden set {path}")


def _load_yaml(text: str) -> Any:
    """YAML when PyYAML is installed (the quality extra has it), else JSON only."""
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{exc} (YAML needs PyYAML: pip install 'fluxserve[quality]')"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).replace("\n", " ")) from None

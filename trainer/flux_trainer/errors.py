"""The trainer's failures: each names what is wrong and carries its process exit code,
so a caller (a Kubernetes Job, a script) can tell bad input from a broken run."""

from __future__ import annotations


class TrainerError(Exception):
    """A run that cannot go on; the message says why in terms of the user's input."""

    exit_code = 1
    kind = "error"


class ConfigError(TrainerError):
    """A flag or a combination of flags that cannot work (also: a base model that does
    not load)."""

    exit_code = 2
    kind = "config"


class DatasetError(TrainerError):
    """A dataset that cannot be fetched, or fails the checks made before any compute;
    the message names each file, field and limit."""

    exit_code = 3
    kind = "dataset"

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:_SHOWN]
        more = len(self.problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        super().__init__(text)


_SHOWN = 20


class MissingDependencyError(TrainerError):
    """An optional package (or a CUDA device) a requested feature needs."""

    exit_code = 4
    kind = "dependency"


class ResumeError(TrainerError):
    """A checkpoint that does not belong to this run (another dataset or settings)."""

    exit_code = 5
    kind = "resume"

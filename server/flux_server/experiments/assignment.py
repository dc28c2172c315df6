"""Which arm of an experiment serves a request: pure functions of the experiments, the
requested preset, the caller and its headers.

The subject is the authenticated user, else the ``X-User-Id`` header, else nobody (the
request does not take part). Arms are picked by weighted rendezvous hashing (Schindelhauer
and Schomaker's weighted HRW): every arm scores ``weight / -ln(u)`` with ``u`` a uniform
number drawn from SHA-256 of (salt, experiment, subject, arm name), and the highest score
wins. Hence:

- each arm receives ``weight / 100`` of the subjects (the scores are exponential races);
- a subject's arm depends on nothing else, so it is the same on every request, replica
  and restart, and the order the arms are listed in does not matter;
- when weights change, no subject leaves an arm whose weight rose or joins one whose
  weight fell; adding an arm (the others keeping their proportions) takes subjects only
  into it, and removing one moves only its own subjects. No assignment can move exactly
  the changed weight for every change among three or more arms; measured, a change moves
  1.2 to 1.4 times that minimum (tests/experiments/test_assignment.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flux_contract.experiments import Arm, Experiment
from flux_contract.names import header_value, normalize
from flux_contract.wire import EXPERIMENT_HEADER, USER_ID_HEADER
from flux_server.errors import InvalidRequest

__all__ = [
    "EXPERIMENT_HEADER",
    "USER_ID_HEADER",
    "Assignment",
    "ServedArm",
    "arm_json",
    "assign",
    "pick_arm",
]
MAX_SUBJECT_LENGTH = 256


@dataclass(frozen=True)
class ServedArm:
    """The arm a request or a job is served in, as its answer names it (a job's record
    keeps this much: the subject stays out of the store)."""

    experiment: str
    arm: str
    preset: str
    """The arm's preset: it replaces the requested one (the request's own fields still win)."""

    @property
    def header_value(self) -> str:
        """``X-Fluxserve-Experiment`` (REST), trailing metadata (gRPC): ``experiment=arm``."""
        return header_value(self.experiment, self.arm)

    def to_json(self) -> dict[str, str]:
        """The arm in a JSON answer (a synchronous result's and a job's ``experiment``);
        the SDK reads it as ``flux_client.types.ExperimentArm``."""
        return {"name": self.experiment, "arm": self.arm, "preset": self.preset}

    def served(self) -> ServedArm:
        """Just the arm (an :class:`Assignment` without its subject)."""
        return ServedArm(self.experiment, self.arm, self.preset)


def arm_json(arm: ServedArm | None) -> dict[str, str] | None:
    """``experiment`` in a JSON answer: the arm, or None outside any experiment."""
    return None if arm is None else arm.to_json()


@dataclass(frozen=True)
class Assignment(ServedArm):
    """The arm a request is served in, and who it was assigned to."""

    subject: str


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup: REST headers and gRPC metadata spell names differently."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def subject_of(user: str | None, headers: Mapping[str, str]) -> str | None:
    """Who the request is for: the authenticated user, else ``X-User-Id``, else None.
    A header ``X-User-Id`` longer than 256 characters or not printable is refused."""
    if user:
        return f"user:{user}"
    claimed = (_header(headers, USER_ID_HEADER) or "").strip()
    if not claimed:
        return None
    if len(claimed) > MAX_SUBJECT_LENGTH or not claimed.isprintable():
        raise InvalidRequest(
            f"{USER_ID_HEADER} must be 1 to {MAX_SUBJECT_LENGTH} printable characters",
            field=USER_ID_HEADER,
        )
    # Namespaced so that a header cannot claim an authenticated user's arm.
    return f"id:{claimed}"


def in_audience(experiment: Experiment, headers: Mapping[str, str]) -> bool:
    if experiment.audience is None:
        return True
    return _header(headers, experiment.audience.header) in experiment.audience.values


def _uniform(*parts: str) -> float:
    """A number in (0, 1) from the parts, the same in every process (unlike ``hash()``)."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64


def pick_arm(experiment: Experiment, subject: str) -> Arm:
    """The subject's arm: weighted rendezvous hashing over the arms."""
    best, best_score = experiment.arms[0], -1.0
    for arm in experiment.arms:
        if arm.weight <= 0:
            continue
        u = _uniform(experiment.salt, experiment.name, subject, arm.name)
        score = arm.weight / -math.log(u)
        if score > best_score:
            best, best_score = arm, score
    return best


def assign(
    experiments: Sequence[Experiment],
    preset: str | None,
    user: str | None,
    headers: Mapping[str, str],
) -> Assignment | None:
    """The arm serving a request for ``preset``; None when no experiment runs on it, the
    caller is outside its audience, or the request has no subject."""
    if not preset:
        return None
    wanted = normalize(preset)
    experiment = next((e for e in experiments if normalize(e.preset) == wanted), None)
    if experiment is None or not in_audience(experiment, headers):
        return None
    subject = subject_of(user, headers)
    if subject is None:
        return None
    arm = pick_arm(experiment, subject)
    return Assignment(experiment.name, arm.name, arm.preset, subject)

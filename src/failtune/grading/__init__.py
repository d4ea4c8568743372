"""Graders: turn a completion into a verdict with a reason, never silently."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Grade:
    """One verdict; `reason` says why, so a wrong grader can be audited."""

    correct: bool
    extracted: str | None
    reason: str

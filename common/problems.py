"""A prerequisite that is not met: what it is, and the command or setting that fixes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of a prerequisite check (source or standby). ``fatal`` ones stop replication."""

    what: str
    fix: str
    fatal: bool = True

"""What a primary itself knows about its capture, read from the database alone (no Kafka needed).

``ark status`` uses it when the broker is unreachable, and to show how far the primary's log runs
ahead of what the capture confirmed. Each engine implements :class:`SourceProbe` next to its capture.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SourceLog:
    """The capture's place in the primary's log, as the primary reports it."""

    node: str
    #: One line for people: where the capture's retained log starts, where the log is now, how much is held.
    summary: str = ""
    #: The primary's current log position (text), None when unknown.
    current_position: str | None = None
    #: Bytes of log the primary holds back for the capture, None when unknown.
    retained_bytes: int | None = None
    #: Engine-specific facts for ``--json`` (slot name, state...).
    details: dict[str, Any] = field(default_factory=dict)
    #: Why the probe could not tell (unreachable, no slot...), "" when it could.
    message: str = ""


class SourceProbe(ABC):
    """Reads :class:`SourceLog` from the primary; never raises for an unreachable primary."""

    @abstractmethod
    def source_log(self) -> SourceLog:
        """The capture's place in the primary's log now (``message`` says why when it cannot be read)."""

    @abstractmethod
    def bytes_between(self, older: str, newer: str) -> int | None:
        """How many bytes of log lie between two positions of this engine (None when it cannot tell)."""

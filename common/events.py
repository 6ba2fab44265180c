"""The group's events: the control records that say something happened to it, read as (time, node, kind, sentence).

Every decision and failure of automatic failover is a typed record on the control topic (schemas/control.py):
the controller's decisions (``controller-decision``), a node agent's changes of state (``node-state``), a fence
(``node-fenced``), a new primary (``epoch-begun``). :func:`event_of` reads one as an :class:`Event`; ``ark status``
lists the recent ones and the active controller runs the group's alert command for those of the configured kinds
(failover/alerts.py). The kinds are a closed list (:data:`EVENT_KINDS`) so that a typo in ``alerts.kinds`` fails
when the config is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from common.automation_settings import DEFAULT_ALERT_KINDS, EVENT_KINDS
from common.control import ControlRecord
from schemas.control import ControllerDecision, EpochBegun, NodeFenced, NodeState

__all__ = ["DEFAULT_ALERT_KINDS", "EVENT_KINDS", "Event", "event_of", "events_of", "iso_us"]

_DECISIONS: Final = {"active": "controller-active", "failover": "failover", "failover-done": "failover-done",
                     "failover-failed": "failover-failed", "error": "controller-error"}
_TROUBLE: Final = ("failed", "restarting")


@dataclass(frozen=True)
class Event:
    """One event: where it is on the control topic, when, which node, its kind and the sentence that says it."""

    offset: int
    at_us: int
    kind: str
    node: str
    message: str
    epoch: int = 0
    by: str = ""

    def environment(self, group: str) -> dict[str, str]:
        """The ``ARK_*`` variables the alert command gets."""
        return {"ARK_GROUP": group, "ARK_EVENT_KIND": self.kind, "ARK_EVENT_NODE": self.node,
                "ARK_EVENT_TIME": iso_us(self.at_us), "ARK_EVENT_MESSAGE": self.message,
                "ARK_EVENT_EPOCH": str(self.epoch), "ARK_EVENT_OFFSET": str(self.offset)}

    def document(self, group: str) -> dict[str, Any]:
        """The JSON object the alert command reads on stdin (and ``ark status --json`` shows)."""
        return {"group": group, "kind": self.kind, "node": self.node, "time": iso_us(self.at_us),
                "message": self.message, "epoch": self.epoch, "offset": self.offset, "by": self.by}


def iso_us(us: int) -> str:
    """Microseconds since the epoch as ISO-8601 UTC with milliseconds."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us / 1e6)) + f".{int(us % 1_000_000 / 1000):03d}Z"


def event_of(rec: ControlRecord) -> Event | None:
    """The event a control record is (None: it is not one, e.g. an operator's intent or a lease renewal)."""
    body = rec.body
    at, by = rec.issued_at_us, rec.issued_by
    if isinstance(body, ControllerDecision):
        kind = _DECISIONS.get(body.action)
        if kind is None:
            return None
        node = rec.target or body.holder
        return Event(rec.offset, at, kind, node, body.sentence, body.epoch, body.holder)
    if isinstance(body, NodeState):
        if body.state in _TROUBLE:
            kind = f"node-{body.state}"
        elif body.state == "healthy" and body.previous in _TROUBLE:
            kind = "node-recovered"
        else:
            return None
        return Event(rec.offset, at, kind, rec.target, body.message, body.epoch, by)
    if isinstance(body, NodeFenced):
        self_fenced = "self-fenced" in body.how
        message = f"{rec.target} is {body.how}; {body.sessions_ended} client session(s) ended"
        return Event(rec.offset, at, "node-fenced" if self_fenced else "handover-fence", rec.target, message,
                     body.epoch, by)
    if isinstance(body, EpochBegun):
        previous = f" after {body.previous}" if body.previous else ""
        return Event(rec.offset, at, "primary-changed", body.primary,
                     f"{body.primary} is the primary of epoch {body.epoch}{previous} ({body.reason})", body.epoch, by)
    return None


def events_of(records: list[ControlRecord]) -> list[Event]:
    """The events among ``records``, in topic order."""
    return [e for e in (event_of(r) for r in records) if e is not None]

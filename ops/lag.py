"""Lag measured from the source, not from the redo topic's end (pure: status and the console use it).

The redo topic's end says nothing about a capture that has stopped publishing: a standby at that end
would show "lag 0" while the primary goes on committing. So each standby's lag is the age of the newest
moment up to which it is known to hold everything the source had committed:

* the commit time of the last transaction it applied (it holds everything committed up to then), and
* the moment the capture last had everything its source had committed durable in Kafka
  (``caught_up_at``), once the standby has applied up to the redo end offset of that moment.

When the capture stalls (retrying, stopped, killed, or paused), ``caught_up_at`` stops moving and every
standby's lag grows from that moment, whatever the topic's end says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: A heartbeat older than this means the agent is down.
STALE_AFTER_S = 10.0
#: A running capture not caught up for this long is reported as behind its source.
BEHIND_AFTER_S = 10.0


@dataclass(frozen=True)
class CaptureView:
    """What the capture last said about itself (its newest heartbeat)."""

    state: str
    message: str
    heard_at_s: float
    caught_up_at_s: float  # 0: not since it started
    caught_up_offset: int

    @classmethod
    def of(cls, beat: dict[str, Any]) -> CaptureView:
        return cls(state=beat["state"], message=beat.get("message", ""), heard_at_s=beat["sent_at_us"] / 1e6,
                   caught_up_at_s=beat.get("caught_up_at_us", 0) / 1e6,
                   caught_up_offset=beat.get("caught_up_offset", -1))


def standby_lag(now: float, applied_commit_us: int, next_offset: int, capture: CaptureView | None) -> float | None:
    """Seconds since the newest moment the standby is known complete up to (None: nothing known yet)."""
    known = []
    if applied_commit_us > 0:
        known.append(applied_commit_us / 1e6)
    if capture is not None and capture.caught_up_at_s > 0 and next_offset >= capture.caught_up_offset >= 0:
        known.append(capture.caught_up_at_s)
    if not known:
        return None
    return max(0.0, now - max(known))


def capture_stall(now: float, capture: CaptureView | None) -> str:
    """A sentence when the capture is not keeping up with its source ('' when it is)."""
    if capture is None:
        return "capture not running: nothing the primary commits reaches any standby"
    since = (f"; last caught up with its source {now - capture.caught_up_at_s:.0f} s ago"
             if capture.caught_up_at_s > 0 else "")
    age = now - capture.heard_at_s
    if age >= STALE_AFTER_S:
        return f"capture down (last heard {age:.0f} s ago){since}"
    if capture.state in ("retrying", "error", "stopped"):
        reason = f": {capture.message}" if capture.message else ""
        stalled = (f" for {now - capture.caught_up_at_s:.0f} s" if capture.caught_up_at_s > 0 else "")
        return f"capture stalled{stalled} ({capture.state}){reason}"
    if capture.caught_up_at_s > 0 and now - capture.caught_up_at_s >= BEHIND_AFTER_S:
        return f"capture behind its source{since}"
    return ""

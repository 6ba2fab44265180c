"""Sequence values on demand: what a switchover calls once the primary is read-only, before it promotes.

The capture publishes the replicated sequences' values about every heartbeat while transactions flow
and at each shape change (:meth:`producers.session.CaptureSession.sequences`). Between two of those,
a primary can hand out values whose rows are already in the stream; a *planned* switchover closes that
window: with the primary read-only, :func:`publish_sequences` has the capture publish every value now and
returns the redo offset of that entry. A standby whose applied offset is past it holds every sequence
at or ahead of the primary, and ``ark check --promotable`` then finds none behind.
"""

from __future__ import annotations

import time

from common.config import ArkConfig
from common.control import ControlChannel
from common.errors import ArkError
from schemas.control import PublishSequences, SequencesPublished


def publish_sequences(cfg: ArkConfig, reason: str, *, timeout: float = 30.0) -> SequencesPublished:
    """Ask the group's capture to publish every replicated sequence's value now; its answer (with the redo
    offset of the entry). Raises ArkError when no capture answers within ``timeout`` seconds."""
    channel = ControlChannel.for_config(cfg, start=None)  # follows what comes after the request
    try:
        request = channel.publish(PublishSequences(reason), "")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in channel.poll():
                if isinstance(rec.body, SequencesPublished) and rec.body.request == request:
                    return rec.body
            time.sleep(0.1)
    finally:
        channel.close()
    raise ArkError(f"the capture of group {cfg.group} did not publish the sequences within {timeout:g} s",
                   fix="check that 'ark capture' runs (ark status); the request stays on the control topic and is "
                       "answered when it starts")

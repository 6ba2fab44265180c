"""Topic names: the one place that decides them (ARCHITECTURE.md, "The redo topic is the database's history")."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is usable inside a topic name, else raise ValueError naming the fix."""
    if not _NAME.match(name):
        raise ValueError(
            f"{kind} name {name!r} is not usable in a Kafka topic name: use 1-100 letters, digits, '_' or '-'"
        )
    return name


def redo_topic(group: str) -> str:
    """The logical history of one replicated database: one partition, total commit order."""
    return f"ark.{validate_name('group', group)}.redo"


def heartbeat_topic(group: str) -> str:
    """Heartbeats of every agent of the group, about one per second each."""
    return f"ark.{validate_name('group', group)}.heartbeat"


def control_topic(group: str) -> str:
    """Operator intents and controller decisions; replayed to derive roles and settings."""
    return f"ark.{validate_name('group', group)}.control"


def quarantine_topic(group: str) -> str:
    """Raw bytes of entries that failed their integrity check, with the reason."""
    return f"ark.{validate_name('group', group)}.quarantine"


def divergence_topic(group: str) -> str:
    """After a failover: what the old primary committed that never reached Kafka (``ark reinstate``)."""
    return f"ark.{validate_name('group', group)}.divergence"


def files_topic(group: str, file_set: str) -> str:
    """Filesync deltas and acknowledgements of one file set."""
    return f"ark.{validate_name('group', group)}.files.{validate_name('file set', file_set)}"


def capture_transactional_id(group: str) -> str:
    """The capture producer's transactional.id: it belongs to the group, not the host (guarantee 6)."""
    return f"ark.{validate_name('group', group)}.capture"


def lease_topic(group: str) -> str:
    """The active controller's lease: claims and renewals (failover/lease.py); short retention."""
    return f"ark.{validate_name('group', group)}.lease"

"""The switchover and failover cases' client (deploy/continuity.py, shared with bench/continuity.py), and what
they read back from the group's topics."""

from __future__ import annotations

import json
from typing import Any

from common.config import load_config
from common.kafka import make_consumer, read_range, watermarks
from deploy.continuity import Ack, AckClient, multi_host_dsn
from schemas import envelope
from schemas.topics import divergence_topic

__all__ = ["Ack", "AckClient", "divergence_seqs", "multi_host_dsn"]


def divergence_seqs(group: Any) -> set[int]:
    """Ledger seqs of the history rows inserted by the transactions of the group's divergence topic (what
    ``ark reinstate`` recorded: acknowledged on an old primary, never in Kafka)."""
    cfg = load_config(group.config)
    consumer = make_consumer(cfg.kafka, group_id="tests-divergence")
    out: set[int] = set()
    try:
        topic = divergence_topic(cfg.group)
        _low, high = watermarks(consumer, topic)
        for msg in read_range(consumer, topic, 0, high):
            doc = json.loads(envelope.decode(msg.value(), msg.headers(), expect="divergence").record["document"])
            out.update(int(r["written"]["seq"]) for r in doc["rows"]  # inserts into history
                       if r["table"] == "public.history" and r["op"] == "INSERT" and r["written"].get("seq"))
    finally:
        consumer.close()
    return out

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


def divergence_seqs(group: Any, table: str = "public.history", column: str = "seq") -> set[int]:
    """Ledger seqs (``column``) of the ``table`` rows inserted by the transactions of the group's divergence topic
    (what ``ark reinstate`` recorded: acknowledged on an old primary, never in Kafka)."""
    cfg = load_config(group.config)
    consumer = make_consumer(cfg.kafka, group_id="tests-divergence")
    out: set[int] = set()
    try:
        topic = divergence_topic(cfg.group)
        if topic not in consumer.list_topics(timeout=10).topics:
            return out  # no 'ark reinstate' ever ran in this group (F26: a broker outage is no failover)
        _low, high = watermarks(consumer, topic)
        for msg in read_range(consumer, topic, 0, high):
            doc = json.loads(envelope.decode(msg.value(), msg.headers(), expect="divergence").record["document"])
            out.update(int(r["written"][column]) for r in doc["rows"]  # inserts into the table
                       if r["table"] == table and r["op"] == "INSERT" and r["written"].get(column))
    finally:
        consumer.close()
    return out

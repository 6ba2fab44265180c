"""Lag probes of bench/mariadb_vs_native.py: a row inserted on the primary every 0.1 s (``db.lag_probe``: id,
sent_us), watched on each replica (polled every 0.02 s) and in the redo topic (read as ``ark apply`` reads it).
Lag = the moment a watcher first sees a probe - the moment its INSERT was sent.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition
from pg_vs_native import ROOT, wait_until  # bench/ is the script's directory, on sys.path when run as a script

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.kafka import make_consumer  # noqa: E402
from common.settings import KafkaSettings  # noqa: E402
from deploy.mariadb import MariaDBInstance  # noqa: E402
from schemas import envelope  # noqa: E402
from schemas.entries import Op, TxnChunk, from_record  # noqa: E402
from schemas.topics import redo_topic  # noqa: E402
from tests.support.mariadb import connect  # noqa: E402

PROBE_EVERY_S = 0.1
PROBE_POLL_S = 0.02


@dataclass
class ProbeWatcher:
    """Polls one replica for new lag_probe rows; lag = wall clock when first seen - when the INSERT was sent."""

    name: str
    inst: MariaDBInstance
    db: str
    lags: dict[int, float] = field(default_factory=dict)
    last_id: int = 0

    def run(self, stop: threading.Event) -> None:
        conn = connect(self.inst)
        try:
            while not stop.is_set():
                self.poll_once(conn)
                time.sleep(PROBE_POLL_S)
        finally:
            conn.close()

    def poll_once(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, sent_us FROM `{self.db}`.lag_probe WHERE id > %s ORDER BY id", (self.last_id,))
            rows = cur.fetchall()
        now_us = time.time_ns() // 1000
        for pid, sent_us in rows:
            self.lags[int(pid)] = (now_us - int(sent_us)) / 1e6
            self.last_id = max(self.last_id, int(pid))


@dataclass
class KafkaProbeWatcher:
    """Reads the redo topic as ``ark apply`` does (read_committed, Ark's consumer settings) from its end now;
    lag = the moment a probe row's entry is readable - when its INSERT was sent: capture + Kafka, no apply."""

    name: str
    bootstrap: str
    group: str
    table: str  # the probe table, ``db.lag_probe``
    lags: dict[int, float] = field(default_factory=dict)
    last_id: int = 0

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(KafkaSettings(bootstrap=self.bootstrap), group_id=f"{self.group}-bench-probe")
        topic = redo_topic(self.group)
        try:
            end = int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1])
            consumer.assign([TopicPartition(topic, 0, end)])
            while not stop.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error():
                    continue
                now_us = time.time_ns() // 1000
                entry = from_record(envelope.decode(msg.value(), msg.headers() or [], topic=topic).record)
                if not isinstance(entry.body, TxnChunk):
                    continue
                for change in entry.body.changes:
                    if change.table == self.table and change.op == Op.INSERT:
                        pid, sent_us = int(change.values[0]), int(change.values[1])
                        self.lags[pid] = (now_us - sent_us) / 1e6
                        self.last_id = max(self.last_id, pid)
        finally:
            consumer.close()


class Probes:
    """Insert a probe row on the primary every 0.1 s; each replica is polled every 0.02 s."""

    def __init__(self, primary: MariaDBInstance, db: str, watchers: list[ProbeWatcher | KafkaProbeWatcher],
                 first_id: int) -> None:
        self.primary = primary
        self.db = db
        self.watchers = watchers
        self.next_id = first_id
        self.inserted: list[int] = []
        self.stop_insert = threading.Event()
        self.stop_watch = threading.Event()
        self.threads = [threading.Thread(target=self._insert, daemon=True)]
        self.threads += [threading.Thread(target=w.run, args=(self.stop_watch,), daemon=True) for w in watchers]

    def start(self) -> Probes:
        for t in self.threads:
            t.start()
        return self

    def _insert(self) -> None:
        conn = connect(self.primary)
        try:
            nxt = time.monotonic()
            while not self.stop_insert.is_set():
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO `{self.db}`.lag_probe (id, sent_us) VALUES (%s, %s)",
                                (self.next_id, time.time_ns() // 1000))
                self.inserted.append(self.next_id)
                self.next_id += 1
                nxt += PROBE_EVERY_S
                self.stop_insert.wait(max(0.0, nxt - time.monotonic()))
        finally:
            conn.close()

    def finish(self, timeout: float) -> None:
        """Stop inserting; wait until every replica has seen every probe (or ``timeout``); stop watching."""
        self.stop_insert.set()
        self.threads[0].join()
        last = self.inserted[-1] if self.inserted else 0
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: all(w.last_id >= last for w in self.watchers), timeout, "the last probe")
        self.stop_watch.set()
        for t in self.threads[1:]:
            t.join()

    def lags(self, watcher: ProbeWatcher | KafkaProbeWatcher) -> list[float]:
        """Lags of the probes inserted during the run (a missing one counts as infinite)."""
        return [watcher.lags.get(i, float("inf")) for i in self.inserted]

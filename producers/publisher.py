"""The encoding side of capture: entries → envelopes → records of one Kafka transaction at a time.

The transport is a :class:`~common.redo.RedoWriter` (Kafka's transactional producer in production, an
in-memory log in fast tests). Order of durability (guarantee 3): the runner confirms a source position
only after :meth:`RedoPublisher.commit` has returned for the transaction that holds it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from common.redo import RedoWriter
from schemas.entries import RedoEntry, TxnChunk
from schemas.redo_codec import encode_entry

#: Commit a Kafka transaction inside a huge source transaction past this many bytes, so that
#: no Kafka transaction outlives transaction.timeout.ms. The applier only applies at the last chunk.
#: Small values also let the applier start on a large transaction while capture still reads it
#: (the standby transaction stays open across chunks; the source is confirmed only at the end).
MAX_TXN_BYTES = 16 * 1024 * 1024
MAX_TXN_SECONDS = 2.0

Header = tuple[str, str | bytes | None]


class MessageTooLarge(Exception):
    """An encoded entry is larger than the message limit (the session says which rows, then stops)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"an entry of {size:,} bytes is larger than the {limit:,}-byte message limit")


#: Room kept below the message limit for Kafka's record framing and Ark's headers.
HEADROOM_BYTES = 2048


class RedoPublisher:
    """Encodes redo entries (CRC, fingerprint, epoch, position, commit-time headers) and writes them.

    ``limit`` is the redo log's message limit: an entry that would exceed it is never produced
    (:class:`MessageTooLarge`), so the broker never refuses one and the capture never retries forever.
    """

    def __init__(self, writer: RedoWriter, limit: int = 0) -> None:
        self.writer = writer
        self.limit = limit
        self.in_transaction = False
        self.txn_bytes = 0
        self.txn_started = 0.0

    @property
    def last_offset(self) -> int:
        """The highest offset delivered so far (-1 before the first)."""
        return self.writer.last_offset

    def publish(self, entry: RedoEntry, *, headers: Sequence[Header] = (), stream_time_us: int | None = None) -> None:
        """Produce one entry inside the current Kafka transaction (opening one if needed); ``headers`` are
        added to the envelope's own (a retransmission's tag). ``stream_time_us`` stamps an entry that is not a
        transaction with the stream's time at its place (see below)."""
        if not self.in_transaction:
            self.writer.begin()
            self.in_transaction = True
            self.txn_bytes = 0
            self.txn_started = time.monotonic()
        body = entry.body
        position = body.commit.text if isinstance(body, TxnChunk) else getattr(body, "position", "")
        # The envelope's commit time is what a delayed standby waits on: a transaction's commit; for an entry
        # between or inside transactions (a table's shape, a schema change, sequence values) the stream's time at
        # its place when the session gives one (the commit time of the transaction it belongs to or follows), so
        # that it never holds back transactions that committed before it was published (a capture catching up
        # after a restart or a switchover); else the read time of sequence values; else now.
        if isinstance(body, TxnChunk):
            commit_us: int | None = body.commit_time_us
        else:
            commit_us = stream_time_us or getattr(body, "read_time_us", None)
        env = encode_entry(entry, source_position=position, commit_time_us=commit_us)
        if self.limit and len(env.value) + HEADROOM_BYTES > self.limit:
            raise MessageTooLarge(len(env.value) + HEADROOM_BYTES, self.limit)
        self.writer.produce(env.value, [*env.headers, *headers], env.timestamp_ms)
        self.txn_bytes += len(env.value)

    def should_commit_midway(self) -> bool:
        """True when the open Kafka transaction is large or old enough to commit inside a source transaction."""
        return self.in_transaction and (
            self.txn_bytes >= MAX_TXN_BYTES or time.monotonic() - self.txn_started >= MAX_TXN_SECONDS
        )

    def commit(self) -> None:
        """Commit the open Kafka transaction; afterwards everything produced in it is durable."""
        if not self.in_transaction:
            return
        self.in_transaction = False
        self.writer.commit()

    def abort(self) -> None:
        """Abort the open Kafka transaction (its entries never become visible to read_committed readers)."""
        if not self.in_transaction:
            return
        self.in_transaction = False
        self.writer.abort()

    def poll(self) -> None:
        """Serve delivery callbacks."""
        self.writer.poll()

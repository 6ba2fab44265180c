"""Local state of a sender or a receiver, in one SQLite file each (crash-safe: WAL, one commit per step).

Sender: what each target acknowledged per path, what was shipped to it and not yet acknowledged
(*in flight*: a delayed target acknowledges a pass only after its delay), the chunk signatures of
acknowledged and in-flight contents (the delta bases), a stat cache of the source (the quick
check), its passes (sequence, consistency points) and its feedback offset.
Receiver: its changes offset and what it applied per path, with the local lstat taken after and the
digest of the entry's own attributes then (a later change of ctime is checked against it).
Losing either file is safe: the sender re-learns the targets' state from the feedback partition,
and a receiver re-reads the changes partition and answers divergences with its real content.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from filesync.chunks import Signature
from filesync.plan import Acked

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acked (target TEXT, path TEXT, kind TEXT, content_hash BLOB, meta_digest BLOB,
                                  PRIMARY KEY (target, path));
CREATE TABLE IF NOT EXISTS sigs (content_hash BLOB PRIMARY KEY, packed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS statcache (path TEXT PRIMARY KEY, size INT, mtime_ns INT, ctime_ns INT, ino INT,
                                      content_hash BLOB, racy INT);
CREATE TABLE IF NOT EXISTS applied (path TEXT PRIMARY KEY, kind TEXT, content_hash BLOB, meta_digest BLOB,
                                    size INT, mtime_ns INT, ino INT, ctime_ns INT DEFAULT 0,
                                    local_digest BLOB DEFAULT x'');
CREATE TABLE IF NOT EXISTS pending (target TEXT, path TEXT, pass_seq INT, present INT, kind TEXT,
                                    content_hash BLOB, meta_digest BLOB, PRIMARY KEY (target, path));
CREATE TABLE IF NOT EXISTS passes (pass_id TEXT PRIMARY KEY, seq INT UNIQUE, started_us INT, published_us INT,
                                   redo_start INT, redo_end INT, changes INT);
"""

StatKey = tuple[int, int, int, int]


class AppliedRow(NamedTuple):
    """What a receiver applied at one path: the entry as shipped (kind, content, source attributes'
    digest), then its lstat afterwards and the digest of the attributes it had on the target.
    (A NamedTuple: every PassEnd reads one per applied entry.)"""

    path: str
    kind: str
    content_hash: bytes
    meta_digest: bytes
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int
    local_digest: bytes


@dataclass(frozen=True)
class PassRow:
    """One pass the sender ran: its ids, times (µs), consistency point (redo offsets) and size."""

    pass_id: str
    seq: int
    started_us: int
    published_us: int
    redo_start: int | None
    redo_end: int | None
    changes: int


class StateDB:
    """One SQLite state file. Methods commit immediately unless inside :meth:`batch`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(applied)")}
        if "ctime_ns" not in columns:  # a state file of an earlier version: the new columns start empty
            self.db.execute("ALTER TABLE applied ADD COLUMN ctime_ns INT DEFAULT 0")
            self.db.execute("ALTER TABLE applied ADD COLUMN local_digest BLOB DEFAULT x''")
        self._depth = 0

    def batch(self) -> _Batch:
        """Context manager grouping writes in one transaction."""
        return _Batch(self)

    # --- kv
    def get(self, key: str, default: str = "") -> str:
        """A stored string (``default`` when absent)."""
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else default

    def put(self, key: str, value: str) -> None:
        """Store a string."""
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    # --- sender: acked
    def acked(self, target: str) -> dict[str, Acked]:
        """Everything ``target`` acknowledged, by path."""
        rows = self.db.execute("SELECT path, kind, content_hash, meta_digest FROM acked WHERE target=?", (target,))
        return {p: Acked(k, bytes(c), bytes(m)) for p, k, c, m in rows}

    def set_acked(self, target: str, path: str, acked: Acked | None) -> None:
        """Record (or with None forget) what ``target`` holds at ``path``."""
        if acked is None:
            self.db.execute("DELETE FROM acked WHERE target=? AND path=?", (target, path))
        else:
            self.db.execute("INSERT OR REPLACE INTO acked VALUES (?, ?, ?, ?, ?)",
                            (target, path, acked.kind, acked.content_hash, acked.meta_digest))

    # --- sender: in flight (shipped, not yet acknowledged by a PassAck)
    def expected(self, target: str) -> dict[str, Acked]:
        """What ``target`` will hold once it has applied everything shipped: acked, then in flight on top."""
        view = self.acked(target)
        rows = self.db.execute("SELECT path, present, kind, content_hash, meta_digest FROM pending WHERE target=?",
                               (target,))
        for path, present, kind, content_hash, meta_digest in rows.fetchall():
            if present:
                view[path] = Acked(kind, bytes(content_hash), bytes(meta_digest))
            else:
                view.pop(path, None)
        return view

    def set_pending(self, target: str, path: str, pass_seq: int, expected: Acked | None) -> None:
        """Record that pass ``pass_seq`` shipped ``target`` the change leaving ``expected`` (None: absent)."""
        row = expected or Acked("", b"", b"")
        self.db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (target, path, pass_seq, expected is not None, row.kind, row.content_hash, row.meta_digest))

    def clear_pending(self, target: str, upto_seq: int) -> int:
        """``target`` applied every pass up to ``upto_seq``: its acks now say what it holds. Returns rows dropped."""
        cur = self.db.execute("DELETE FROM pending WHERE target=? AND pass_seq<=?", (target, upto_seq))
        return cur.rowcount

    def pending_count(self, target: str) -> int:
        """How many paths were shipped to ``target`` and are not yet applied there."""
        row = self.db.execute("SELECT COUNT(*) FROM pending WHERE target=?", (target,)).fetchone()
        return int(row[0])

    # --- sender: passes
    def begin_pass(self, pass_id: str, started_us: int) -> int:
        """Register a new pass; returns its sequence number (1, 2, ...)."""
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM passes").fetchone()
        seq = int(row[0])
        self.db.execute("INSERT INTO passes VALUES (?, ?, ?, 0, NULL, NULL, 0)", (pass_id, seq, started_us))
        return seq

    def end_pass(self, pass_id: str, published_us: int, redo_start: int | None, redo_end: int | None,
                 changes: int) -> None:
        """Record a pass's PassEnd: when it was published, its consistency point and size."""
        self.db.execute("UPDATE passes SET published_us=?, redo_start=?, redo_end=?, changes=? WHERE pass_id=?",
                        (published_us, redo_start, redo_end, changes, pass_id))
        # Keep the history bounded: passes older than the last 10,000 are no longer looked up.
        self.db.execute("DELETE FROM passes WHERE seq < (SELECT MAX(seq) FROM passes) - 10000")

    def pass_seq(self, pass_id: str) -> int | None:
        """The sequence number of a pass this sender ran (None when unknown)."""
        row = self.db.execute("SELECT seq FROM passes WHERE pass_id=?", (pass_id,)).fetchone()
        return int(row[0]) if row else None

    def last_pass(self) -> PassRow | None:
        """The newest pass that published its PassEnd."""
        row = self.db.execute("SELECT pass_id, seq, started_us, published_us, redo_start, redo_end, changes "
                              "FROM passes WHERE published_us > 0 ORDER BY seq DESC LIMIT 1").fetchone()
        return PassRow(*row) if row else None

    # --- sender: signatures
    def signature(self, content_hash: bytes) -> Signature | None:
        """The stored signature of a content, if any."""
        row = self.db.execute("SELECT packed FROM sigs WHERE content_hash=?", (content_hash,)).fetchone()
        return Signature.unpack(bytes(row[0])) if row else None

    def put_signature(self, sig: Signature) -> None:
        """Keep ``sig`` as a future delta basis."""
        self.db.execute("INSERT OR REPLACE INTO sigs VALUES (?, ?)", (sig.content_hash, sig.pack()))

    def prune_signatures(self) -> int:
        """Drop signatures no target holds any more; returns how many."""
        cur = self.db.execute("DELETE FROM sigs WHERE content_hash NOT IN (SELECT content_hash FROM acked "
                              "UNION SELECT content_hash FROM pending)")
        return cur.rowcount

    # --- sender: stat cache
    def cached_hash(self, path: str, key: StatKey) -> bytes | None:
        """The content hash of ``path`` when its stat key is unchanged and it was not racy."""
        row = self.db.execute("SELECT size, mtime_ns, ctime_ns, ino, content_hash, racy FROM statcache WHERE path=?",
                              (path,)).fetchone()
        if row and tuple(row[:4]) == key and not row[5]:
            return bytes(row[4])
        return None

    def put_cached_hash(self, path: str, key: StatKey, content_hash: bytes, racy: bool) -> None:
        """Remember the content hash of ``path`` at stat ``key``."""
        self.db.execute("INSERT OR REPLACE INTO statcache VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (path, *key, content_hash, racy))

    # --- receiver: applied
    _APPLIED = "path, kind, content_hash, meta_digest, size, mtime_ns, ino, ctime_ns, local_digest"
    _APPLIED_READ = ("path, kind, content_hash, meta_digest, size, mtime_ns, ino, COALESCE(ctime_ns, 0), "
                     "COALESCE(local_digest, x'')")

    def applied(self, path: str) -> AppliedRow | None:
        """What was applied at ``path`` (None when nothing is recorded)."""
        row = self.db.execute(f"SELECT {self._APPLIED_READ} FROM applied WHERE path=?", (path,)).fetchone()
        return AppliedRow._make(row) if row else None

    def set_applied(self, path: str, kind: str, content_hash: bytes, meta_digest: bytes,
                    st: os.stat_result | None, local_digest: bytes = b"") -> None:
        """Record what was applied at ``path``, its lstat afterwards and the digest of its own attributes
        then (None forgets the path)."""
        if st is None:
            self.db.execute("DELETE FROM applied WHERE path=?", (path,))
        else:
            self.db.execute(f"INSERT OR REPLACE INTO applied ({self._APPLIED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (path, kind, content_hash, meta_digest, st.st_size, st.st_mtime_ns, st.st_ino,
                             st.st_ctime_ns, local_digest))

    def touch_applied(self, path: str, st: os.stat_result, local_digest: bytes) -> None:
        """The entry's stat moved but its attributes did not (a time restored, a link count changed)."""
        self.db.execute("UPDATE applied SET size=?, mtime_ns=?, ino=?, ctime_ns=?, local_digest=? WHERE path=?",
                        (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, local_digest, path))

    def applied_paths(self) -> list[AppliedRow]:
        """Every applied row."""
        return list(map(AppliedRow._make, self.db.execute(f"SELECT {self._APPLIED_READ} FROM applied").fetchall()))

    def close(self) -> None:
        """Close the database."""
        self.db.close()


class _Batch:
    def __init__(self, state: StateDB) -> None:
        self.state = state

    def __enter__(self) -> StateDB:
        if self.state._depth == 0:
            self.state.db.execute("BEGIN")
        self.state._depth += 1
        return self.state

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.state._depth -= 1
        if self.state._depth == 0:
            self.state.db.execute("ROLLBACK" if exc_type else "COMMIT")

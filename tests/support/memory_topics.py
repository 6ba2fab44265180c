"""In-memory fakes of Ark's two topics, for fast tests of the runners' own logic (see :mod:`tests.support.memory`).

- :class:`MemoryRedoLog`: the redo topic, with Kafka's transaction semantics (aborted records never
  visible; commit markers take offsets; a newer writer fences an older one; retention drops a prefix).
- :class:`MemoryBus` and :func:`memory_channel`: the control topic, with real signed records.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from common.control import ControlBus, ControlChannel, ControlRecord, Wire
from common.errors import FencedError
from common.redo import EndOfLog, RedoLog, RedoReader, RedoRecord, RedoWriter
from schemas.control import Body, body_from_args

KEY = b"k" * 40
Headers = list[tuple[str, str | bytes | None]]


# -- control ----------------------------------------------------------------------------------------
class MemoryBus(ControlBus):
    """An in-memory control topic; several buses (channels) may share one ``store``."""

    def __init__(self, store: list[tuple[bytes, Headers]] | None = None, start: int = 0) -> None:
        self.store = store if store is not None else []
        self._next = start

    def send(self, value: bytes, headers: Headers) -> None:
        self.store.append((value, list(headers)))

    def fetch(self, max_records: int) -> list[Wire]:
        out: list[Wire] = []
        while self._next < len(self.store) and len(out) < max_records:
            value, headers = self.store[self._next]
            out.append((self._next, value, headers))
            self._next += 1
        return out

    def end(self) -> int:
        return len(self.store)

    def position(self) -> int:
        return self._next


def memory_channel(store: list[tuple[bytes, Headers]] | None = None, *, group: str = "g", key: bytes = KEY,
                   start: int = 0) -> ControlChannel:
    """A control channel on an in-memory topic (share ``store`` between channels to talk)."""
    return ControlChannel(group, key, MemoryBus(store, start), who="test@host")


def record(kind: str, target: str = "", *, at_offset: int = 0, rid: str = "r1", at_us: int | None = None,
           **args: str) -> ControlRecord:
    """A decoded control record built from v1-style string ``args`` (tests of record handling): ``rid`` is its
    request id, ``at_offset`` its offset, ``at_us`` when it was issued (now by default)."""
    body: Body | None = body_from_args(kind, args)
    assert body is not None, kind
    return ControlRecord(at_offset, body, target, "test@host", time.time_ns() // 1000 if at_us is None else at_us,
                         rid)


# -- the redo log -----------------------------------------------------------------------------------
class MemoryRedoLog(RedoLog):
    """The redo topic in memory (see the module docstring)."""

    def __init__(self, topic: str = "ark.g.redo", limit: int = 1 << 20) -> None:
        self.topic = topic
        #: The message limit (Kafka's default broker limit is about 1 MB): a larger record is refused.
        self.limit = limit
        #: offset -> record; offsets of aborted records and commit markers are absent.
        self.records: dict[int, RedoRecord] = {}
        self.next_offset = 0
        self.low = 0
        self.writer_epoch = 0
        self.quarantined: list[tuple[bytes | None, Headers, str]] = []
        self.lock = threading.Lock()

    def ensure(self) -> None:
        pass

    def writer(self) -> MemoryWriter:
        with self.lock:
            self.writer_epoch += 1
            return MemoryWriter(self, self.writer_epoch)

    def reader(self, name: str) -> MemoryReader:
        return MemoryReader(self)

    def watermarks(self) -> tuple[int, int]:
        return self.low, self.next_offset

    def read_range(self, start: int, stop: int) -> Iterator[RedoRecord]:
        for offset in range(max(start, self.low), min(stop, self.next_offset)):
            rec = self.records.get(offset)
            if rec is not None:
                yield rec

    def tail(self, count: int, accept: Callable[[RedoRecord], bool] | None = None) -> list[RedoRecord]:
        found = [r for o, r in sorted(self.records.items()) if o >= self.low and (accept is None or accept(r))]
        return found[-count:] if count else []

    def message_limit(self) -> int:
        return self.limit

    def quarantine(self, value: bytes | None, headers: Headers, key: str) -> None:
        self.quarantined.append((value, list(headers), key))

    def delete_below(self, offset: int) -> None:
        """Retention: records below ``offset`` are gone."""
        self.low = max(self.low, offset)
        for o in [o for o in self.records if o < self.low]:
            del self.records[o]

    def corrupt(self, offset: int) -> None:
        """Flip a byte of the record at ``offset`` (as a damaged disk would)."""
        rec = self.records[offset]
        value = bytearray(rec.value or b"")
        value[len(value) // 2] ^= 0xFF
        self.records[offset] = RedoRecord(rec.offset, bytes(value), rec.headers, rec.timestamp_ms)

    def entries(self) -> list[RedoRecord]:
        """Every committed record, in order."""
        return [r for _o, r in sorted(self.records.items())]


class MemoryWriter(RedoWriter):
    """A transactional writer; a newer one (from the same log) fences it."""

    def __init__(self, log: MemoryRedoLog, epoch: int) -> None:
        self._log = log
        self._epoch = epoch
        self._open: list[tuple[bytes, Headers, int]] | None = None
        self.last_offset = -1
        #: Test hook: called before each commit (raise to simulate a failed commit).
        self.before_commit: Callable[[], None] | None = None

    def _check(self) -> None:
        if self._log.writer_epoch != self._epoch:
            raise FencedError("fenced by a newer writer", fix="test")

    def begin(self) -> None:
        self._check()
        self._open = []

    def produce(self, value: bytes, headers: Headers, timestamp_ms: int) -> None:
        assert self._open is not None, "produce outside a transaction"
        size = len(value) + sum(len(k) + len(v or b"") for k, v in headers)
        assert size <= self._log.limit, f"a record of {size} bytes is over the log's {self._log.limit}-byte limit"
        self._open.append((value, list(headers), timestamp_ms))

    def commit(self) -> None:
        self._check()
        if self.before_commit is not None:
            self.before_commit()
        assert self._open is not None
        with self._log.lock:
            for value, headers, ts in self._open:
                offset = self._log.next_offset
                self._log.records[offset] = RedoRecord(offset, value, headers, ts)
                self._log.next_offset += 1
                self.last_offset = offset
            self._log.next_offset += 1  # the commit marker takes an offset too
        self._open = None

    def abort(self) -> None:
        if self._open is not None:
            self._log.next_offset += len(self._open) + 1  # aborted records and the marker leave a hole
        self._open = None


class MemoryReader(RedoReader):
    """A reader of the in-memory log (read_committed: only what is committed)."""

    def __init__(self, log: MemoryRedoLog) -> None:
        self._log = log
        self._next = 0
        self._paused = False
        self.reported = -1

    def seek(self, offset: int) -> None:
        self._next = offset

    def poll(self, timeout: float) -> RedoRecord | EndOfLog | None:
        if self._paused:
            time.sleep(min(timeout, 0.01))
            return None
        log = self._log
        self._next = max(self._next, log.low)
        while self._next < log.next_offset:
            rec = log.records.get(self._next)
            self._next += 1
            if rec is not None:
                return rec
        if timeout:
            time.sleep(min(timeout, 0.005))
        return EndOfLog(self._next)

    def pause(self) -> None:
        self._paused = True

    def resume(self, offset: int) -> None:
        self._paused = False
        self._next = offset

    def watermarks(self) -> tuple[int, int]:
        return self._log.watermarks()

    def report(self, next_offset: int) -> None:
        self.reported = next_offset

    def close(self) -> None:
        pass

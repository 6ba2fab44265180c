"""Content-defined chunking (FastCDC, C-backed) and XXH3-128 chunk hashes, streamed with bounded memory.

A file's *signature* is its chunk list: the length and the XXH3-128 of each chunk, in order, plus
the hash of the whole content. Chunk boundaries depend on content only, so an insert or a delete
moves the boundaries near the edit and nowhere else; every other chunk keeps its hash and becomes a
copy op in the delta. Files are read in segments of :data:`SEGMENT` bytes, so memory stays bounded
whatever the file size.

Sparse files: the holes of a file are found with ``SEEK_DATA``/``SEEK_HOLE`` and are never read or
chunked. Each hole is one or more *hole chunks* (hash :data:`HOLE_HASH`, at most :data:`HOLE_PIECE`
bytes each); only the data ranges are cut with FastCDC. The whole-content hash still covers every
byte: a hole counts as the zeros a reader sees there.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xxhash
from fastcdc.fastcdc_cy import fastcdc_cy

from filesync.sparse import data_ranges, segments

SEGMENT = 16 << 20
HASH_LEN = 16
_PACKED = np.dtype([("length", "<u4"), ("hash", f"S{HASH_LEN}")])
#: Files up to this size keep their bytes from the chunking pass, so the sender reads them once.
KEEP_LIMIT = 4 << 20
EMPTY_HASH = xxhash.xxh3_128_digest(b"")
#: The "hash" of a hole chunk: no XXH3-128 of real data is all zeros in practice (2^-128).
HOLE_HASH = bytes(HASH_LEN)
#: Longest hole chunk (chunk lengths are stored as u32); longer holes become several chunks.
HOLE_PIECE = 1 << 30
_ZEROS = bytes(1 << 20)

@dataclass(frozen=True)
class Signature:
    """Chunk lengths and hashes of one content, and the XXH3-128 of the whole."""

    lengths: tuple[int, ...]
    hashes: tuple[bytes, ...]
    content_hash: bytes
    size: int
    avg: int = 8192

    def offsets(self) -> list[int]:
        """Start offset of each chunk."""
        out, pos = [], 0
        for length in self.lengths:
            out.append(pos)
            pos += length
        return out

    def hole_bytes(self) -> int:
        """How many bytes of the content are holes."""
        return sum(n for n, h in zip(self.lengths, self.hashes, strict=True) if h == HOLE_HASH)

    def pack(self) -> bytes:
        """Wire/storage form: 20 bytes per chunk (u32 length, hash), the u32 average, the content hash."""
        arr = np.empty(len(self.lengths), dtype=_PACKED)
        arr["length"] = self.lengths
        arr["hash"] = self.hashes
        return arr.tobytes() + self.avg.to_bytes(4, "little") + self.content_hash

    @classmethod
    def unpack(cls, blob: bytes) -> Signature:
        """Inverse of :meth:`pack`."""
        body, avg, content_hash = blob[:-HASH_LEN - 4], blob[-HASH_LEN - 4:-HASH_LEN], blob[-HASH_LEN:]
        arr = np.frombuffer(body, dtype=_PACKED)
        lengths = tuple(int(x) for x in arr["length"])
        hashes = tuple(bytes(h).ljust(HASH_LEN, b"\0") for h in arr["hash"])
        return cls(lengths, hashes, content_hash, sum(lengths), int.from_bytes(avg, "little"))


def chunk_hash(data: bytes | memoryview) -> bytes:
    """The strong hash of one chunk (XXH3-128, the same family rsync 3.2+ negotiates)."""
    return xxhash.xxh3_128_digest(data)


def average_for(size: int, cap: int = 8192) -> int:
    """The average chunk size for a file of ``size`` bytes: a power of two near sqrt(size)/2
    (rsync's block size is ~sqrt(size)), at least 256 and at most ``cap``."""
    avg = 256
    while avg * 2 <= cap and (avg * 4) ** 2 <= size:
        avg *= 2
    return avg


def limits(avg: int) -> tuple[int, int]:
    """(min, max) chunk sizes for an average of ``avg`` bytes."""
    return max(64, avg // 4), max(1024, avg * 8)


def update_zeros(h: xxhash.xxh3_128, count: int) -> None:
    """Feed ``count`` zero bytes (a hole as readers see it) to the running hash ``h``."""
    whole, rest = divmod(count, len(_ZEROS))
    for _ in range(whole):
        h.update(_ZEROS)
    if rest:
        h.update(memoryview(_ZEROS)[:rest])


class _Builder:
    """Accumulates one signature from data ranges and holes, in file order."""

    def __init__(self, avg: int) -> None:
        self.avg = avg
        self.lengths: list[int] = []
        self.hashes: list[bytes] = []
        self.whole = xxhash.xxh3_128()
        self.size = 0

    def hole(self, count: int) -> None:
        update_zeros(self.whole, count)
        self.size += count
        while count > 0:
            piece = min(count, HOLE_PIECE)
            self.lengths.append(piece)
            self.hashes.append(HOLE_HASH)
            count -= piece

    def data(self, view: memoryview, consumed: Callable[[int, int], None] | None = None) -> None:
        """Cut and hash ``view``; ``consumed(a, b)`` is told each [a, b) of it already hashed (every SEGMENT)."""
        lo, hi = limits(self.avg)
        pos = done = 0
        for chunk in fastcdc_cy(view, min_size=lo, avg_size=self.avg, max_size=hi):
            length = chunk.length
            self.lengths.append(length)
            self.hashes.append(chunk_hash(view[pos:pos + length]))
            pos += length
            if consumed is not None and pos - done >= SEGMENT:
                self.whole.update(view[done:pos])
                consumed(done, pos)
                done = pos
        self.whole.update(view[done:])
        if consumed is not None:
            consumed(done, len(view))
        self.size += len(view)

    def finish(self) -> Signature:
        return Signature(tuple(self.lengths), tuple(self.hashes), self.whole.digest(), self.size, self.avg)


def signature_of_bytes(data: bytes, cap: int = 8192, *, avg: int | None = None) -> Signature:
    """The signature of in-memory ``data`` without holes (chunk average from its size and ``cap``,
    or exactly ``avg``)."""
    builder = _Builder(avg or average_for(len(data), cap))
    if data:
        builder.data(memoryview(data))
    return builder.finish()


def signature_of_file(
    path: str | os.PathLike[str],
    cap: int = 8192,
    *,
    avg: int | None = None,
    progress: Callable[[int], None] | None = None,
    keep_limit: int = KEEP_LIMIT,
) -> tuple[Signature, bytes | None]:
    """Chunk and hash the file at ``path`` in bounded memory; holes are neither read nor chunked.

    Larger files are memory-mapped read-only and each data range is chunked in one C pass; the
    pages already consumed are dropped (``MADV_DONTNEED``) every :data:`SEGMENT` bytes, so resident
    memory stays bounded. Returns the signature and, for files of at most ``keep_limit`` bytes,
    their content (so the sender need not read them twice). ``progress`` is called with the offset
    consumed so far.
    """
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        builder = _Builder(avg or average_for(size, cap))
        if size <= keep_limit:
            data = os.pread(fd, size, 0) if size else b""
            view = memoryview(data)
            for is_data, start, end in segments(data_ranges(fd, len(data)), len(data)):
                if is_data:
                    builder.data(view[start:end])
                else:
                    builder.hole(end - start)
            return builder.finish(), data
        plan = segments(data_ranges(fd, size), size)
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            whole_view = memoryview(mm)
            try:
                for is_data, start, end in plan:
                    if not is_data:
                        builder.hole(end - start)
                        continue
                    view = whole_view[start:end]
                    try:
                        builder.data(view, _dropper(mm, start, progress))
                    finally:
                        view.release()
            finally:
                whole_view.release()
    if progress is not None:
        progress(size)
    return builder.finish(), None


def _dropper(mm: mmap.mmap, base: int, progress: Callable[[int], None] | None) -> Callable[[int, int], None]:
    """Drops the mapped pages of [base + a, base + b) once they are hashed (whole pages only)."""
    def consumed(a: int, b: int) -> None:
        lo = (base + a) // mmap.PAGESIZE * mmap.PAGESIZE
        hi = (base + b) // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        if progress is not None:
            progress(base + b)
    return consumed


def hash_file(path: str | os.PathLike[str]) -> bytes:
    """XXH3-128 of the whole file, read in segments; holes are hashed as zeros without being read."""
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        for is_data, start, end in segments(data_ranges(fd, size), size):
            if not is_data:
                update_zeros(h, end - start)
                continue
            pos = start
            while pos < end:
                block = os.pread(fd, min(SEGMENT, end - pos), pos)
                if not block:
                    return h.digest()  # truncated while read: the caller's comparison fails
                h.update(block)
                pos += len(block)
    return h.digest()

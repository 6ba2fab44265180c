"""Content-defined chunking (FastCDC, C-backed) and XXH3-128 chunk hashes, streamed with bounded memory.

A file's *signature* is its chunk list: the length and the XXH3-128 of each chunk, in order, plus
the hash of the whole content. Chunk boundaries depend on content only, so an insert or a delete
moves the boundaries near the edit and nowhere else; every other chunk keeps its hash and becomes a
copy op in the delta. Files are read in segments of :data:`SEGMENT` bytes, so memory stays bounded
whatever the file size.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xxhash
from fastcdc.fastcdc_cy import fastcdc_cy

SEGMENT = 16 << 20
HASH_LEN = 16
_PACKED = np.dtype([("length", "<u4"), ("hash", f"S{HASH_LEN}")])
#: Files up to this size keep their bytes from the chunking pass, so the sender reads them once.
KEEP_LIMIT = 4 << 20
EMPTY_HASH = xxhash.xxh3_128_digest(b"")


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


def _cut(view: memoryview, avg: int) -> list[int]:
    lo, hi = limits(avg)
    return [c.length for c in fastcdc_cy(view, min_size=lo, avg_size=avg, max_size=hi)]


def signature_of_bytes(data: bytes, cap: int = 8192, *, avg: int | None = None) -> Signature:
    """The signature of in-memory ``data`` (chunk average from its size and ``cap``, or exactly ``avg``)."""
    avg = avg or average_for(len(data), cap)
    view = memoryview(data)
    lengths = _cut(view, avg) if data else []
    hashes, pos = [], 0
    for length in lengths:
        hashes.append(chunk_hash(view[pos:pos + length]))
        pos += length
    return Signature(tuple(lengths), tuple(hashes), xxhash.xxh3_128_digest(data), len(data), avg)


def signature_of_file(
    path: str | os.PathLike[str],
    cap: int = 8192,
    *,
    avg: int | None = None,
    progress: Callable[[int], None] | None = None,
    keep_limit: int = KEEP_LIMIT,
) -> tuple[Signature, bytes | None]:
    """Chunk and hash the file at ``path`` in bounded memory.

    The file is memory-mapped read-only and chunked in one C pass; the pages already consumed are
    dropped (``MADV_DONTNEED``) every :data:`SEGMENT` bytes, so resident memory stays bounded.
    Returns the signature and, for files of at most ``keep_limit`` bytes, their content (so the
    sender need not read them twice). ``progress`` is called with the bytes consumed so far.
    """
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        avg = avg or average_for(size, cap)
        if size <= keep_limit:
            data = fh.read()
            return signature_of_bytes(data, avg=avg), data
        lo, hi = limits(avg)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                lengths: list[int] = []
                hashes: list[bytes] = []
                pos = dropped = 0
                whole = xxhash.xxh3_128()
                for chunk in fastcdc_cy(view, min_size=lo, avg_size=avg, max_size=hi):
                    length = chunk.length
                    lengths.append(length)
                    hashes.append(chunk_hash(view[pos:pos + length]))
                    pos += length
                    if pos - dropped >= SEGMENT:
                        edge = (pos // mmap.PAGESIZE) * mmap.PAGESIZE
                        whole.update(view[dropped:edge])
                        mm.madvise(mmap.MADV_DONTNEED, dropped, edge - dropped)
                        dropped = edge
                        if progress is not None:
                            progress(pos)
                whole.update(view[dropped:])
                content_hash = whole.digest()
            finally:
                view.release()
    if progress is not None:
        progress(size)
    return Signature(tuple(lengths), tuple(hashes), content_hash, pos, avg), None


def hash_file(path: str | os.PathLike[str]) -> bytes:
    """XXH3-128 of the whole file, read in segments."""
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(SEGMENT):
            h.update(block)
    return h.digest()


"""Holes of sparse files: finding them (``SEEK_DATA``/``SEEK_HOLE``) and making them (``PUNCH_HOLE``).

A hole reads as zeros but takes no disk space. The sender never reads or ships holes (they are
hole chunks of the signature, see chunks.py); the receiver recreates them by not writing there and
setting the size with ``ftruncate``, or, when a file already holding the right content is
allocated where the source has a hole, by punching the hole in place (the content does not change,
so readers see no difference).
"""

from __future__ import annotations

import ctypes
import errno
import os

#: (is_data, start, end): one data range or hole of a file, in file order.
Segment = tuple[bool, int, int]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The [start, end) ranges of ``fd`` (``size`` bytes) that hold data; the rest are holes.

    Uses ``SEEK_DATA``/``SEEK_HOLE``. Where the filesystem cannot say (EINVAL, EOPNOTSUPP) the
    whole file counts as data, as it does for filesystems without holes (Linux then reports one
    data range up to the size). Moves the file offset of ``fd``: callers use pread.
    """
    ranges: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data at or after pos: the rest is a hole
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                return [(0, size)] if size else []
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:  # the file shrank under us: stop at what was seen
            break
        ranges.append((start, end))
        pos = end
    return ranges


def segments(ranges: list[tuple[int, int]], size: int) -> list[Segment]:
    """Data ranges and the holes between them, covering [0, size) in order."""
    out: list[Segment] = []
    pos = 0
    for start, end in ranges:
        if start > pos:
            out.append((False, pos, start))
        out.append((True, start, end))
        pos = end
    if pos < size:
        out.append((False, pos, size))
    return out


def hole_ranges(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """The [start, end) holes of the file at ``path``."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        return [(s, e) for is_data, s, e in segments(data_ranges(fh.fileno(), size), size) if not is_data]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate [offset, offset + length) of ``fd`` keeping its size (it then reads as zeros).

    Raises OSError (EOPNOTSUPP where the filesystem cannot punch holes).
    """
    if length <= 0:
        return
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def has_data(fd: int, start: int, end: int) -> bool:
    """True when [start, end) of ``fd`` holds allocated data somewhere."""
    try:
        found = os.lseek(fd, start, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False
        raise
    return found < end

"""Holes of sparse files: found with SEEK_DATA/SEEK_HOLE, never chunked or shipped, hashed as zeros.

Real sparse files in temp dirs (the filesystem under /tmp supports holes on these machines; the
tests skip where it does not).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import xxhash

from filesync.chunks import HOLE_HASH, HOLE_PIECE, Signature, hash_file, signature_of_file
from filesync.delta import HOLE, LITERAL, literal_bytes, plan_delta
from filesync.sparse import data_ranges, has_data, hole_ranges, punch_hole, segments

MiB = 1 << 20


def sparse_file(path: Path, size: int, data_at: dict[int, bytes]) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in data_at.items():
            os.pwrite(fh.fileno(), data, offset)
    return path


@pytest.fixture
def holes_supported(tmp_path: Path) -> None:
    probe = sparse_file(tmp_path / "probe", 4 * MiB, {0: b"x" * 4096})
    if os.stat(probe).st_blocks * 512 >= 4 * MiB:
        pytest.skip("the filesystem under the temp dir has no holes")


def replay(ops: list, basis: bytes, new: bytes) -> bytes:  # type: ignore[type-arg]
    """Apply ``ops`` as the receiver does (holes read back as zeros)."""
    out = bytearray()
    for op in ops:
        if op.hole:
            out += bytes(op.length)
        elif op.literal:
            out += new[op.new_offset:op.new_offset + op.length]
        else:
            out += basis[op.copy_offset:op.copy_offset + op.length]
    return bytes(out)


def test_data_ranges_and_segments(tmp_path: Path, holes_supported: None) -> None:
    rng = random.Random(3)
    f = sparse_file(tmp_path / "f", 10 * MiB, {MiB: rng.randbytes(4096), 5 * MiB: rng.randbytes(8192)})
    with open(f, "rb") as fh:
        ranges = data_ranges(fh.fileno(), 10 * MiB)
    assert ranges == [(MiB, MiB + 4096), (5 * MiB, 5 * MiB + 8192)]
    assert segments(ranges, 10 * MiB) == [(False, 0, MiB), (True, MiB, MiB + 4096), (False, MiB + 4096, 5 * MiB),
                                          (True, 5 * MiB, 5 * MiB + 8192), (False, 5 * MiB + 8192, 10 * MiB)]
    assert hole_ranges(f)[0] == (0, MiB)
    empty = sparse_file(tmp_path / "all-hole", 3 * MiB, {})
    with open(empty, "rb") as fh:
        assert data_ranges(fh.fileno(), 3 * MiB) == []


@pytest.mark.parametrize("keep_limit", [64 * MiB, 0], ids=["in-memory", "mmap"])
def test_signature_skips_holes_and_hashes_them_as_zeros(tmp_path: Path, holes_supported: None,
                                                        keep_limit: int) -> None:
    rng = random.Random(5)
    f = sparse_file(tmp_path / "f", 12 * MiB, {0: rng.randbytes(20_000), 7 * MiB: rng.randbytes(50_000)})
    sig, _data = signature_of_file(f, keep_limit=keep_limit)
    content = f.read_bytes()
    assert sig.content_hash == xxhash.xxh3_128_digest(content) == hash_file(f)
    assert sig.size == len(content) == 12 * MiB
    holes = [n for n, h in zip(sig.lengths, sig.hashes, strict=True) if h == HOLE_HASH]
    assert sum(holes) == sig.hole_bytes() > 11 * MiB
    assert Signature.unpack(sig.pack()) == sig
    ops = plan_delta(None, sig)
    assert [op.copy_offset for op in ops if not op.literal] == [HOLE, HOLE]  # the two holes, nothing else
    assert literal_bytes(ops) == 12 * MiB - sig.hole_bytes() < 100_000
    assert replay(ops, b"", content) == content


def test_a_hole_longer_than_a_chunk_length_is_split_then_merged(tmp_path: Path, holes_supported: None) -> None:
    size = HOLE_PIECE * 2 + 3 * 4096
    f = sparse_file(tmp_path / "huge", size, {size - 4096: b"tail" * 1024})
    sig, _ = signature_of_file(f, keep_limit=0)
    assert sig.size == size and sig.lengths[:2] == (HOLE_PIECE, HOLE_PIECE)
    ops = plan_delta(None, sig)
    assert ops[0].hole and ops[0].length == size - 4096  # one hole op however long the hole
    assert literal_bytes(ops) == 4096


def test_delta_never_copies_from_a_basis_hole(tmp_path: Path, holes_supported: None) -> None:
    rng = random.Random(9)
    block = rng.randbytes(64 * 1024)
    old = sparse_file(tmp_path / "old", 8 * MiB, {0: block, 4 * MiB: block})
    old_sig, _ = signature_of_file(old)
    # the new version writes data into a former hole, keeps the other data, and has a new hole
    new = sparse_file(tmp_path / "new", 8 * MiB, {0: block, 2 * MiB: rng.randbytes(4096)})
    new_sig, _ = signature_of_file(new, avg=old_sig.avg)
    ops = plan_delta(old_sig, new_sig)
    offsets = old_sig.offsets()
    hole_spans = [(o, o + n) for o, n, h in zip(offsets, old_sig.lengths, old_sig.hashes, strict=True)
                  if h == HOLE_HASH]
    for op in ops:
        if op.copy_offset >= 0:
            assert not any(a < op.copy_offset + op.length and op.copy_offset < b for a, b in hole_spans)
    assert literal_bytes(ops) == 4096  # only the bytes written into the hole travel
    assert replay(ops, old.read_bytes(), new.read_bytes()) == new.read_bytes()
    assert any(op.copy_offset == LITERAL for op in ops) and any(op.hole for op in ops)


def test_punch_hole_keeps_content_and_frees_blocks(tmp_path: Path, holes_supported: None) -> None:
    f = tmp_path / "full"
    f.write_bytes(b"a" * 4096 + bytes(MiB) + b"b" * 4096)
    before = os.stat(f).st_blocks
    with open(f, "r+b") as fh:
        assert has_data(fh.fileno(), 4096, 4096 + MiB)
        punch_hole(fh.fileno(), 4096, MiB)
        assert not has_data(fh.fileno(), 4096, 4096 + MiB)
    assert os.stat(f).st_blocks < before - MiB // 512 + 16
    assert f.read_bytes() == b"a" * 4096 + bytes(MiB) + b"b" * 4096

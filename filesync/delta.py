"""Delta planning: the ops that turn a basis (what the target acknowledged) into the new content.

Pure: it needs the two signatures only, never the basis bytes, so the sender computes deltas
against a target it cannot read, and deltas flow one way. Consecutive chunks found in the basis at
consecutive offsets merge into one copy op; every other chunk is a literal carrying its hash.
Holes of the new content become hole ops (nothing shipped, nothing written: the target leaves a
hole there); holes of the basis are never copied from, since copying a hole would allocate it.
"""

from __future__ import annotations

from dataclasses import dataclass

from filesync.chunks import HOLE_HASH, Signature

#: ``copy_offset`` of a literal op (its bytes travel in the op).
LITERAL = -1
#: ``copy_offset`` of a hole op (``length`` bytes of hole, nothing travels).
HOLE = -2


@dataclass(frozen=True)
class Op:
    """Copy ``length`` bytes from basis ``copy_offset``; or (copy_offset :data:`LITERAL`) write the
    literal chunk at ``new_offset`` of the new content, whose hash is ``chunk_hash``; or
    (:data:`HOLE`) leave ``length`` bytes of hole."""

    copy_offset: int
    length: int
    new_offset: int
    chunk_hash: bytes = b""

    @property
    def literal(self) -> bool:
        """True for a literal op."""
        return self.copy_offset == LITERAL

    @property
    def hole(self) -> bool:
        """True for a hole op."""
        return self.copy_offset == HOLE


def plan_delta(basis: Signature | None, new: Signature) -> list[Op]:
    """Ops building ``new`` from ``basis`` (all literals and holes when there is no basis)."""
    index: dict[bytes, int] = {}
    if basis is not None:
        for offset, length, digest in zip(basis.offsets(), basis.lengths, basis.hashes, strict=True):
            if digest != HOLE_HASH:
                index.setdefault(digest + length.to_bytes(4, "little"), offset)
    ops: list[Op] = []
    pos = 0
    for length, digest in zip(new.lengths, new.hashes, strict=True):
        last = ops[-1] if ops else None
        if digest == HOLE_HASH:
            if last is not None and last.hole:
                ops[-1] = Op(HOLE, last.length + length, last.new_offset)
            else:
                ops.append(Op(HOLE, length, pos))
            pos += length
            continue
        found = index.get(digest + length.to_bytes(4, "little"))
        if found is None:
            ops.append(Op(LITERAL, length, pos, digest))
        elif last is not None and last.copy_offset >= 0 and last.copy_offset + last.length == found:
            ops[-1] = Op(last.copy_offset, last.length + length, last.new_offset)
        else:
            ops.append(Op(found, length, pos))
        pos += length
    return ops


def literal_bytes(ops: list[Op]) -> int:
    """How many bytes the ops ship as literals."""
    return sum(op.length for op in ops if op.literal)

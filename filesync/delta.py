"""Delta planning: the ops that turn a basis (what the target acknowledged) into the new content.

Pure: it needs the two signatures only, never the basis bytes, so the sender computes deltas
against a target it cannot read, and deltas flow one way. Consecutive chunks found in the basis at
consecutive offsets merge into one copy op; every other chunk is a literal carrying its hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from filesync.chunks import Signature


@dataclass(frozen=True)
class Op:
    """Copy ``length`` bytes from basis ``copy_offset``, or (copy_offset -1) write the literal chunk
    at ``new_offset`` of the new content, whose hash is ``chunk_hash``."""

    copy_offset: int
    length: int
    new_offset: int
    chunk_hash: bytes = b""

    @property
    def literal(self) -> bool:
        """True for a literal op."""
        return self.copy_offset < 0


def plan_delta(basis: Signature | None, new: Signature) -> list[Op]:
    """Ops building ``new`` from ``basis`` (all literals when there is no basis)."""
    index: dict[bytes, int] = {}
    if basis is not None:
        for offset, length, digest in zip(basis.offsets(), basis.lengths, basis.hashes, strict=True):
            index.setdefault(digest + length.to_bytes(4, "little"), offset)
    ops: list[Op] = []
    pos = 0
    for length, digest in zip(new.lengths, new.hashes, strict=True):
        found = index.get(digest + length.to_bytes(4, "little"))
        if found is None:
            ops.append(Op(-1, length, pos, digest))
        elif ops and not ops[-1].literal and ops[-1].copy_offset + ops[-1].length == found:
            last = ops[-1]
            ops[-1] = Op(last.copy_offset, last.length + length, last.new_offset)
        else:
            ops.append(Op(found, length, pos))
        pos += length
    return ops


def literal_bytes(ops: list[Op]) -> int:
    """How many bytes the ops ship as literals."""
    return sum(op.length for op in ops if op.literal)

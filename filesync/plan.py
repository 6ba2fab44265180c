"""What to ship: the pure comparison of the source with what each target acknowledged.

The sender keeps, per target, the last acknowledged (kind, content hash, metadata digest) of every
path. Comparing that with a scan gives an ordered list of changes; changes that are identical for
several targets (same basis, same result) are shipped once, addressed to all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from filesync.meta import FileMeta

Action = Literal["content", "meta", "rename", "delete"]
CONTENT_KINDS = ("FILE", "HARDLINK")


@dataclass(frozen=True)
class Acked:
    """What a target said it holds at a path."""

    kind: str
    content_hash: bytes
    meta_digest: bytes


@dataclass(frozen=True)
class Current:
    """What the source holds at a path now (``content_hash`` empty for entries without content)."""

    meta: FileMeta
    content_hash: bytes = b""


@dataclass(frozen=True)
class Change:
    """One thing to ship. ``basis_hash`` is the target's content a delta refers to (content only)."""

    action: Action
    path: str
    meta: FileMeta | None = None
    content_hash: bytes = b""
    basis_hash: bytes | None = None
    from_path: str = ""

    def phase(self) -> int:
        """Shipping order: directories, renames, contents, other entries, hard links, deletes."""
        if self.action == "meta" and self.meta is not None and self.meta.kind == "DIR":
            return 0
        if self.action == "rename":
            return 1
        if self.action == "content":
            return 2
        if self.action == "meta" and self.meta is not None and self.meta.kind == "HARDLINK":
            return 4
        if self.action == "meta":
            return 3
        return 5


def _same(acked: Acked | None, cur: Current) -> bool:
    return (acked is not None and acked.kind == cur.meta.kind and acked.content_hash == cur.content_hash
            and acked.meta_digest == cur.meta.digest())


def plan_changes(acked: Mapping[str, Acked], current: Mapping[str, Current], *, delete: bool = True) -> list[Change]:
    """The ordered changes that make a target holding ``acked`` equal to ``current``."""
    gone = {p: a for p, a in acked.items() if p not in current}
    by_content: dict[bytes, list[str]] = {}
    for path in sorted(gone):
        if gone[path].kind == "FILE":
            by_content.setdefault(gone[path].content_hash, []).append(path)
    changes: list[Change] = []
    for path in sorted(current):
        cur, had = current[path], acked.get(path)
        if _same(had, cur):
            continue
        meta = cur.meta
        if meta.kind != "FILE" or had is not None and had.kind == "FILE" and had.content_hash == cur.content_hash:
            changes.append(Change("meta", path, meta, cur.content_hash))
        elif by_content.get(cur.content_hash):
            source = by_content[cur.content_hash].pop(0)
            del gone[source]
            changes.append(Change("rename", path, meta, cur.content_hash, from_path=source))
        else:
            basis = had.content_hash if had is not None and had.kind in CONTENT_KINDS else None
            changes.append(Change("content", path, meta, cur.content_hash, basis_hash=basis))
    if delete:
        changes.extend(Change("delete", path) for path in sorted(gone, reverse=True))
    changes.sort(key=lambda c: (c.phase(), c.path if c.phase() != 5 else ""))
    return changes


def merge_targets(per_target: Mapping[str, Sequence[Change]]) -> list[tuple[Change, tuple[str, ...]]]:
    """Group identical changes across targets; the tuple is empty when every target gets it."""
    everyone = set(per_target)
    groups: dict[Change, list[str]] = {}
    order: list[Change] = []
    for target in sorted(per_target):
        for change in per_target[target]:
            if change not in groups:
                groups[change] = []
                order.append(change)
            groups[change].append(target)
    order.sort(key=lambda c: (c.phase(), c.path if c.phase() != 5 else ""))
    if len(per_target) > 0:
        # deletes keep their reverse-path order (children first) within phase 5
        deletes = sorted((c for c in order if c.phase() == 5), key=lambda c: c.path, reverse=True)
        order = [c for c in order if c.phase() != 5] + deletes
    return [(c, () if set(groups[c]) == everyone else tuple(sorted(groups[c]))) for c in order]

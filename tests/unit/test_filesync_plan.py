"""Pure logic of filesync: planning against acknowledged state, deltas, chunk sizing, attribute plans."""

from __future__ import annotations

import os
import random

import pytest

from common.config_files import PreserveSpec
from filesync.attrs import plan_attrs
from filesync.chunks import Signature, average_for, signature_of_bytes
from filesync.delta import literal_bytes, plan_delta
from filesync.meta import FileMeta
from filesync.plan import Acked, Change, Current, merge_targets, plan_changes


def meta(kind: str = "FILE", mode: int = 0o644, mtime: int = 1, link: str = "", **kw: object) -> FileMeta:
    return FileMeta(kind=kind, mode=mode, uid=0, gid=0, user="root", group="root", mtime_ns=mtime, link=link, **kw)  # type: ignore[arg-type]


def cur(kind: str = "FILE", h: bytes = b"h1", **kw: object) -> Current:
    m = meta(kind, **kw)  # type: ignore[arg-type]
    return Current(m, h if kind in ("FILE", "HARDLINK") else b"")


def ack(c: Current) -> Acked:
    return Acked(c.meta.kind, c.content_hash, c.meta.digest())


F1, F2 = cur(h=b"h1"), cur(h=b"h2")
F1_CHMOD = cur(h=b"h1", mode=0o600)
D = cur("DIR", mode=0o755)
L = cur("SYMLINK", link="x")


@pytest.mark.parametrize(
    ("name", "acked", "current", "expected"),
    [
        ("nothing acked: ship all, dirs first", {}, {"a": F1, "d": D, "l": L},
         [("meta", "d"), ("content", "a"), ("meta", "l")]),
        ("identical: nothing", {"a": ack(F1)}, {"a": F1}, []),
        ("content changed: delta against acked", {"a": ack(F1)}, {"a": F2}, [("content", "a")]),
        ("only attributes changed: meta", {"a": ack(F1)}, {"a": F1_CHMOD}, [("meta", "a")]),
        ("gone: delete", {"a": ack(F1)}, {}, [("delete", "a")]),
        ("moved: rename, no content", {"a": ack(F1)}, {"b": F1}, [("rename", "b")]),
        ("deletes children first", {"d": ack(D), "d/x": ack(F2)}, {}, [("delete", "d/x"), ("delete", "d")]),
        ("kind change file to symlink", {"a": ack(F1)}, {"a": L}, [("meta", "a")]),
    ],
)
def test_plan_changes(name: str, acked: dict[str, Acked], current: dict[str, Current],
                      expected: list[tuple[str, str]]) -> None:
    got = [(c.action, c.path) for c in plan_changes(acked, current)]
    assert got == expected, name


def test_plan_content_basis_and_rename_source() -> None:
    (change,) = plan_changes({"a": ack(F1)}, {"a": F2})
    assert change.basis_hash == b"h1"
    (rename,) = plan_changes({"a": ack(F1)}, {"b": F1})
    assert rename.from_path == "a"
    assert plan_changes({"a": ack(F1)}, {}, delete=False) == []


def test_merge_targets_groups_identical_changes() -> None:
    c1 = Change("content", "a", F2.meta, b"h2", b"h1")
    c2 = Change("content", "a", F2.meta, b"h2", None)
    merged = merge_targets({"t1": [c1], "t2": [c1], "t3": [c2]})
    assert merged == [(c1, ("t1", "t2")), (c2, ("t3",))]
    assert merge_targets({"t1": [c1], "t2": [c1]}) == [(c1, ())]


@pytest.mark.parametrize(
    ("edit", "max_literal"),
    [
        (lambda d: d[:100_000] + b"Z" + d[100_001:], 3 * 2048),
        (lambda d: b"inserted" + d, 3 * 2048),
        (lambda d: d + b"appended" * 100, 3 * 2048 + 800),
        (lambda d: d[:50_000] + d[60_000:], 3 * 2048),
        (lambda d: d, 0),
    ],
    ids=["overwrite", "insert-start", "append", "delete-range", "unchanged"],
)
def test_delta_ships_only_the_edit(edit, max_literal: int) -> None:  # type: ignore[no-untyped-def]
    data = random.Random(1).randbytes(400_000)
    old = signature_of_bytes(data)
    new_data = edit(data)
    new = signature_of_bytes(new_data, avg=old.avg)
    ops = plan_delta(old, new)
    assert literal_bytes(ops) <= max_literal
    # replay the ops against the old bytes: they must rebuild the new content exactly
    out = bytearray()
    for op in ops:
        start = op.new_offset if op.literal else op.copy_offset
        out += (new_data if op.literal else data)[start:start + op.length]
    assert bytes(out) == new_data


def test_delta_without_basis_is_all_literal() -> None:
    new = signature_of_bytes(os.urandom(50_000))
    assert literal_bytes(plan_delta(None, new)) == 50_000


def test_signature_pack_roundtrip() -> None:
    sig = signature_of_bytes(os.urandom(70_000))
    assert Signature.unpack(sig.pack()) == sig
    empty = signature_of_bytes(b"")
    assert Signature.unpack(empty.pack()) == empty


@pytest.mark.parametrize(("size", "cap", "avg"), [
    (0, 8192, 256), (10_000, 8192, 256), (1 << 20, 8192, 512), (64 << 20, 8192, 4096),
    (256 << 20, 8192, 8192), (8 << 30, 8192, 8192), (8 << 30, 65536, 32768)])
def test_average_for(size: int, cap: int, avg: int) -> None:
    assert average_for(size, cap) == avg


ALL = PreserveSpec()


@pytest.mark.parametrize(
    ("name", "want", "current", "kinds"),
    [
        ("fresh file: owner, xattr, mode, time", meta(mode=0o4755, xattrs=(("user.a", b"1"),)), None,
         ["chown", "setxattr", "chmod", "utime"]),
        ("same: nothing", meta(), meta(), []),
        ("mode only", meta(mode=0o600), meta(), ["chmod", "utime"]),
        ("mtime only", meta(mtime=5), meta(), ["utime"]),
        ("xattr removed", meta(), meta(xattrs=(("user.a", b"1"),)), ["rmxattr", "utime"]),
        ("symlink: no chmod, no xattrs", meta("SYMLINK", link="t"), None, ["chown", "utime"]),
    ],
)
def test_plan_attrs(name: str, want: FileMeta, current: FileMeta | None, kinds: list[str]) -> None:
    assert [a.kind for a in plan_attrs(want, ALL, current, (0, 0))] == kinds, name


def test_plan_attrs_setuid_survives_chown() -> None:
    other_owner = FileMeta(**{**meta(mode=0o4755).__dict__, "uid": 5})
    acts = plan_attrs(meta(mode=0o4755), ALL, other_owner, (0, 0))
    assert [a.kind for a in acts][:1] == ["chown"]
    assert "chmod" in [a.kind for a in acts]


def test_meta_digest_covers_attributes() -> None:
    base = meta()
    assert base.digest() == meta().digest()
    for other in (meta(mode=0o600), meta(mtime=2), meta(xattrs=(("user.x", b"v"),)), meta("SYMLINK", link="y")):
        assert other.digest() != base.digest()
    assert FileMeta.from_record(base.to_record()) == base

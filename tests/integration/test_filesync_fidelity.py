"""Fidelity: a tree with every entry kind and attribute, synced, edited every way, synced again, and
compared with rsync's own itemized dry run and an lstat comparison. Nothing may differ — the root of
the set and the allocation of sparse files included.

rsync -aHAXS --numeric-ids --checksum --dry-run --itemize-changes --delete lists every entry whose
content, type, permissions, owner, group, times, ACLs, xattrs or hard links differ (an empty listing
means it would change nothing). The lstat view below checks the same independently, adds
nanosecond times and allocated blocks, and hard-link groups as sets of paths.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import xxhash

from common.config import ArkConfig, parse_config
from filesync import service
from filesync.sparse import punch_hole

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="devices, foreign owners and ACLs need root")

MiB = 1 << 20
EXCLUDE = ["*.log", "scratch/"]
INCLUDE = ["keep.log"]
RSYNC_FILTER = ["--include=keep.log", "--exclude=*.log", "--exclude=scratch/"]


def make_config(bootstrap: str, tmp: Path) -> tuple[ArkConfig, str]:
    name = f"s{uuid.uuid4().hex[:8]}"
    body = {"source": str(tmp / "src"), "state_dir": str(tmp / "state"), "ack_timeout_s": 60, "horizon_s": 0,
            "exclude": EXCLUDE, "include": INCLUDE, "targets": [{"name": "t0", "path": str(tmp / "dst")}]}
    return parse_config({"group": f"g{uuid.uuid4().hex[:6]}", "control_key": {"env": "ARK_CONTROL_KEY"},
                         "kafka": {"bootstrap": bootstrap},
                         "primary": {"name": "p", "engine": "postgresql"}, "files": {name: body}}), name


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def sparse(path: Path, size: int, data_at: dict[int, bytes]) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in data_at.items():
            os.pwrite(fh.fileno(), data, offset)
    return path


def setfacl(*args: str) -> None:
    subprocess.run(["setfacl", *args], check=True, capture_output=True)


def acl_text(path: Path) -> str:
    if path.is_symlink():
        return ""
    out = subprocess.run(["getfacl", "-p", "-n", "--absolute-names", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("# file:"))


def entry_view(root: Path, rel: str) -> tuple[Any, ...]:
    p = root / rel if rel != "." else root
    st = p.lstat()
    fmt = stat.S_IFMT(st.st_mode)
    regular = stat.S_ISREG(st.st_mode)
    xattrs = () if p.is_symlink() else tuple(sorted(
        (n, os.getxattr(p, n, follow_symlinks=False)) for n in os.listxattr(p, follow_symlinks=False)))
    return (fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size if regular else 0,
            xxhash.xxh3_128_hexdigest(p.read_bytes()) if regular else "", st.st_mtime_ns,
            st.st_rdev, os.readlink(p) if p.is_symlink() else "", xattrs, acl_text(p),
            st.st_blocks if regular else 0)


def lstat_view(root: Path, skip: tuple[str, ...] = ()) -> tuple[dict[str, tuple[Any, ...]], set[frozenset[str]]]:
    """Every entry (the root as '.') with its attributes, and the hard-link groups as sets of paths."""
    view = {".": entry_view(root, ".")}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            rel = str((Path(dirpath) / name).relative_to(root))
            if rel in skip or rel.startswith(tuple(s + "/" for s in skip)):
                continue
            view[rel] = entry_view(root, rel)
            st = (Path(dirpath) / name).lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, set()).add(rel)
    return view, {frozenset(g) for g in inodes.values()}


def rsync_itemized(src: Path, dst: Path) -> list[str]:
    out = subprocess.run(["rsync", "-aHAXS", "--numeric-ids", "--checksum", "--dry-run", "--itemize-changes",
                          "--delete", *RSYNC_FILTER, f"{src}/", f"{dst}/"], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def assert_identical(src: Path, dst: Path) -> None:
    assert rsync_itemized(src, dst) == []
    want, want_links = lstat_view(src, skip=("noise.log", "scratch"))
    have, have_links = lstat_view(dst)
    assert sorted(have) == sorted(want)
    for rel in want:
        assert have[rel] == want[rel], rel
    assert have_links == want_links


def build_tree(src: Path) -> None:
    """Every entry kind and attribute filesync replicates; directory times are set last."""
    src.mkdir()
    write(src / "plain.txt", "hello\n")
    write(src / "empty", b"")
    write(src / "big.bin", os.urandom(3 * MiB))
    write(src / "ünïcødé/日本語 ファイル.txt", "名前")
    write(src / "with space/and\nnewline", "odd names")
    write(src / "keep.log", "re-included")
    write(src / "noise.log", "excluded")
    write(src / "scratch/tmp.bin", "excluded dir")
    write(src / "setuid", "#!/bin/sh\n")
    os.chown(src / "setuid", 1234, 4321)  # a foreign owner and group with no names here
    os.chmod(src / "setuid", 0o4755)
    write(src / "setgid-dir/x", "x")
    os.chown(src / "setgid-dir", 0, 65534)
    os.chmod(src / "setgid-dir", 0o2775)
    (src / "sticky").mkdir()
    os.chmod(src / "sticky", 0o1777)
    os.chown(src / "plain.txt", 65534, 65534)  # nobody:nogroup, by name
    os.symlink("plain.txt", src / "rel-link")
    os.symlink("/nonexistent/target", src / "dangling")
    os.symlink("ünïcødé", src / "dir-link")
    os.lchown(src / "rel-link", 1234, 4321)
    write(src / "hl/a", "shared content")
    os.link(src / "hl/a", src / "hl/b")
    os.link(src / "hl/a", src / "hl-c")
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "blockdev", 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.setxattr(src / "plain.txt", "user.checksum", b"abc")
    os.setxattr(src / "big.bin", "user.binary", bytes(range(256)))
    os.setxattr(src / "hl/a", "user.shared", b"1")
    setfacl("-m", "u:nobody:rw,g:nogroup:r", str(src / "plain.txt"))
    setfacl("-m", "u:1234:rwx,d:u:nobody:r,d:g::rx", str(src / "setgid-dir"))
    sparse(src / "sparse.bin", 100 * MiB, {0: os.urandom(4096), 40 * MiB: os.urandom(8192),
                                           100 * MiB - 4096: os.urandom(4096)})
    sparse(src / "all-hole.bin", 50 * MiB, {})
    sparse(src / "trailing-hole.bin", 20 * MiB, {0: os.urandom(8192)})
    os.utime(src / "big.bin", ns=(1, 1_600_000_000_123_456_789))
    os.utime(src / "rel-link", ns=(1, 1_500_000_000_000_000_001), follow_symlinks=False)
    # the root: its own mode, xattr, ACLs and time
    os.chmod(src, 0o751)
    os.setxattr(src, "user.root", b"root attr")
    setfacl("-m", "u:nobody:rx,d:u:nobody:rx", str(src))
    set_dir_times(src)


def set_dir_times(src: Path) -> None:
    for i, (dirpath, _dirs, _files) in enumerate(sorted(os.walk(src), reverse=True)):
        os.utime(dirpath, ns=(1, 1_700_000_000_000_000_000 + i * 1_000_003))


def edit_tree(src: Path) -> None:
    """Every kind of edit, the root's attributes and sparse layouts included."""
    with open(src / "big.bin", "r+b") as fh:
        fh.seek(MiB + 17)
        fh.write(b"edited in the middle")
    with open(src / "plain.txt", "a") as fh:
        fh.write("appended\n")
    os.chmod(src / "setuid", 0o2711)
    os.chown(src / "empty", 4321, 1234)
    os.setxattr(src / "plain.txt", "user.checksum", b"changed")
    os.removexattr(src / "big.bin", "user.binary")
    setfacl("-x", "g:nogroup", str(src / "plain.txt"))
    setfacl("-k", str(src / "setgid-dir"))  # default ACL removed
    (src / "ünïcødé/日本語 ファイル.txt").rename(src / "moved here.txt")
    (src / "with space/and\nnewline").unlink()
    (src / "with space").rmdir()
    (src / "keep.log").unlink()
    os.symlink("plain.txt", src / "keep.log")  # a file becomes a symlink
    (src / "dangling").unlink()
    write(src / "dangling", "a symlink becomes a file")
    os.link(src / "hl/a", src / "hl/d")  # the group grows
    (src / "hl-c").unlink()
    write(src / "hl-c", "no longer linked")  # and loses a member
    (src / "blockdev").unlink()
    os.mknod(src / "blockdev", 0o640 | stat.S_IFBLK, os.makedev(7, 201))
    write(src / "new/deep/file", os.urandom(70_000))
    with open(src / "sparse.bin", "r+b") as fh:
        os.pwrite(fh.fileno(), os.urandom(8192), 70 * MiB)  # data written into a hole
        punch_hole(fh.fileno(), 40 * MiB, 8192)  # a data range punched out
    with open(src / "trailing-hole.bin", "r+b") as fh:
        fh.truncate(60 * MiB)  # a longer trailing hole
    with open(src / "all-hole.bin", "r+b") as fh:
        os.pwrite(fh.fileno(), b"now some data", 25 * MiB)
    os.utime(src / "new/deep/file", ns=(1, 1_650_000_000_999_999_999))
    os.chmod(src, 0o755)
    os.setxattr(src, "user.root", b"root attr, edited")
    os.setxattr(src, "user.root2", b"another")
    set_dir_times(src)


def test_every_kind_and_attribute_round_trips_through_edits(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_tree(src)
    first = service.sync(cfg, name)
    assert not first.nacks and not first.errors
    # 3 MiB + small files: the 170 MiB of holes did not travel
    assert first.literal_bytes < 3 * MiB + 200_000, first.literal_bytes
    assert_identical(src, dst)
    assert os.stat(dst / "sparse.bin").st_blocks * 512 <= 64 * 1024  # 16 KiB of data, not 100 MiB
    assert service.verify(cfg, name) == []

    edit_tree(src)
    second = service.sync(cfg, name)
    assert not second.nacks
    assert second.literal_bytes < 200_000, second.literal_bytes  # edits only: no holes, no unchanged data
    assert_identical(src, dst)
    assert service.verify(cfg, name) == []
    assert service.sync(cfg, name).changes == 0


def test_verify_reports_the_root_and_allocation(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    sparse(src / "sparse.bin", 20 * MiB, {MiB: os.urandom(4096)})
    write(src / "plain", "x")
    service.sync(cfg, name)
    assert service.verify(cfg, name) == []
    # the target's root loses its attributes, and the sparse file is rewritten fully allocated there
    os.chmod(dst, 0o700)
    os.setxattr(dst, "user.foreign", b"1")
    data = (dst / "sparse.bin").read_bytes()
    st = os.stat(dst / "sparse.bin")
    (dst / "sparse.bin").write_bytes(data)
    os.utime(dst / "sparse.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    found = service.verify(cfg, name)
    errors = [(d.path, d.what) for d in found if not d.warning]
    warnings = [(d.path, d.what) for d in found if d.warning]
    assert errors == [(".", "meta")]
    assert len(warnings) == 1 and warnings[0][0] == "sparse.bin" and "allocation" in warnings[0][1]
    # a sync repairs the root; the next content rewrite punches the holes again
    service.sync(cfg, name)
    assert lstat_view(dst)[0]["."] == lstat_view(src)[0]["."]
    with open(src / "sparse.bin", "r+b") as fh:
        os.pwrite(fh.fileno(), b"edit", MiB)
    service.sync(cfg, name)
    assert service.verify(cfg, name) == []
    assert os.stat(dst / "sparse.bin").st_blocks == os.stat(src / "sparse.bin").st_blocks

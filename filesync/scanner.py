"""Walking a source tree: every entry's lstat and metadata, with gitignore-style selection.

The root itself is the entry :data:`~filesync.meta.ROOT` (``"."``): its mode, owner, times,
xattrs and ACLs are replicated like any directory's; it is never excluded and never deleted.
Symlinks are never followed. Hard links are detected by (device, inode): the smallest path of a
group is its primary and ships the content; the others become HARDLINK entries naming it.
Entries that cannot be read are collected in ``errors`` (the walk goes on), so one unreadable file
does not stop the set.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import pathspec

from common.config_files import FileSetConfig
from filesync.errors import SourceMissing
from filesync.meta import ROOT, FileMeta, capture


@dataclass(frozen=True)
class Entry:
    """One source entry: its metadata, the lstat fields the quick check compares, and its
    allocation (``blocks``: 512-byte units, compared by verify for sparse files)."""

    path: str
    meta: FileMeta
    ino: int
    dev: int
    ctime_ns: int
    nlink: int
    blocks: int = 0

    def stat_key(self) -> tuple[int, int, int, int]:
        """(size, mtime_ns, ctime_ns, ino): when equal to the cached one, the content is unchanged."""
        return (self.meta.size, self.meta.mtime_ns, self.ctime_ns, self.ino)


@dataclass
class Scan:
    """The result of one walk: entries by relative path, and the paths that could not be read."""

    root: str
    entries: dict[str, Entry] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)


def selector(config: FileSetConfig) -> pathspec.PathSpec | None:
    """The compiled exclude/include patterns of a set (None when it has none)."""
    lines = config.patterns()
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def excluded(spec: pathspec.PathSpec | None, rel: str, is_dir: bool) -> bool:
    """True when ``rel`` (relative, '/'-separated) is excluded by ``spec``."""
    if spec is None:
        return False
    return spec.match_file(rel + "/" if is_dir else rel)


def scan(config: FileSetConfig, root: str | None = None) -> Scan:
    """Walk the set's source (or ``root``) and return every selected entry.

    Raises SourceMissing when the root is not a readable directory.
    """
    root = root or config.source.path
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise SourceMissing(f"source directory {root} does not exist",
                            fix="create it, or correct files.<set>.source.path in the config") from None
    except PermissionError:
        raise SourceMissing(f"source directory {root} cannot be read (permission denied)",
                            fix="run the sender as a user that can read it (root keeps every owner)") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceMissing(f"source {root} is not a directory", fix="point files.<set>.source.path at a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceMissing(f"source directory {root} cannot be read (permission denied)",
                            fix="run the sender as a user that can read it (root keeps every owner)")
    spec = selector(config)
    result = Scan(root=root)
    pre = config.preserve
    try:
        root_meta = capture(root, st, xattrs=pre.xattrs, acls=pre.acls)
    except OSError as exc:
        raise SourceMissing(f"attributes of the source directory {root} cannot be read: {exc.strerror}",
                            fix="run the sender as a user that can read it (root keeps every owner)") from None
    assert root_meta is not None  # a directory
    result.entries[ROOT] = Entry(ROOT, root_meta, st.st_ino, st.st_dev, st.st_ctime_ns, st.st_nlink, st.st_blocks)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.errors.append((rel_dir or ".", exc.strerror or str(exc)))
            continue
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            try:
                cst = child.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(cst.st_mode)
                if excluded(spec, rel, is_dir):
                    continue
                if not _utf8(rel):
                    # Records carry UTF-8 paths; such a name is reported, never guessed at.
                    result.errors.append((printable(rel), "name is not valid UTF-8"))
                    continue
                if stat.S_ISREG(cst.st_mode) and not os.access(child.path, os.R_OK):
                    raise PermissionError(13, "Permission denied")
                meta = capture(child.path, cst, xattrs=pre.xattrs, acls=pre.acls)
            except OSError as exc:
                result.errors.append((rel, exc.strerror or str(exc)))
                continue
            if meta is None or (meta.kind in ("CHR", "BLK", "FIFO") and not pre.devices):
                continue
            result.entries[rel] = Entry(rel, meta, cst.st_ino, cst.st_dev, cst.st_ctime_ns, cst.st_nlink,
                                        cst.st_blocks)
            if is_dir:
                stack.append(rel)
    if pre.hard_links:
        _mark_hardlinks(result)
    return result


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 shown as ``\\xNN`` (safe to print and log)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _mark_hardlinks(result: Scan) -> None:
    groups: dict[tuple[int, int], list[str]] = {}
    for path, entry in result.entries.items():
        if entry.meta.kind == "FILE" and entry.nlink > 1:
            groups.setdefault((entry.dev, entry.ino), []).append(path)
    for paths in groups.values():
        if len(paths) < 2:
            continue
        primary, *others = sorted(paths)
        for path in others:
            entry = result.entries[path]
            result.entries[path] = Entry(path, entry.meta.as_hardlink(primary), entry.ino, entry.dev,
                                         entry.ctime_ns, entry.nlink, entry.blocks)

"""File metadata: what one directory entry *is* (lstat, never following symlinks) and its digest.

Capture is I/O (lstat, readlink, listxattr); the digest and the record conversion are pure.
POSIX ACLs are extended attributes (``system.posix_acl_access`` / ``system.posix_acl_default``), so
capturing every xattr captures the ACLs too, where the filesystem has them.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import xxhash

KINDS = ("FILE", "DIR", "SYMLINK", "HARDLINK", "CHR", "BLK", "FIFO")
#: The path of a set's root directory: an entry like any other (mode, owner, times, xattrs, ACLs).
ROOT = "."
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


@dataclass(frozen=True)
class FileMeta:
    """Type and attributes of one entry. ``link`` is a symlink's target or a hard link's primary path."""

    kind: str
    mode: int
    uid: int
    gid: int
    user: str
    group: str
    mtime_ns: int
    size: int = 0
    rdev: int = 0
    link: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())

    def digest(self) -> bytes:
        """XXH3-64 of every replicated attribute (not size: content has its own hash)."""
        h = xxhash.xxh3_64()
        h.update(f"{self.kind}|{self.mode:o}|{self.uid}|{self.gid}|{self.user}|{self.group}|"
                 f"{self.mtime_ns}|{self.rdev}|{self.link}".encode())
        for name, value in self.xattrs:
            h.update(b"\0" + name.encode() + b"=" + value)
        return h.digest()

    def to_record(self) -> dict[str, Any]:
        """The Avro FileMeta record."""
        return {"kind": self.kind, "mode": self.mode, "uid": self.uid, "gid": self.gid, "user": self.user,
                "group": self.group, "mtime_ns": self.mtime_ns, "size": self.size, "rdev": self.rdev,
                "link": self.link, "xattrs": [{"name": n, "value": v} for n, v in self.xattrs]}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> FileMeta:
        """Inverse of :meth:`to_record`."""
        return cls(kind=rec["kind"], mode=rec["mode"], uid=rec["uid"], gid=rec["gid"], user=rec["user"],
                   group=rec["group"], mtime_ns=rec["mtime_ns"], size=rec["size"], rdev=rec["rdev"],
                   link=rec["link"], xattrs=tuple((x["name"], x["value"]) for x in rec["xattrs"]))

    def as_hardlink(self, primary: str) -> FileMeta:
        """This file's meta as a hard link to ``primary``."""
        return replace(self, kind="HARDLINK", link=primary)


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The user name of ``uid`` ('' when the system has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    """The group name of ``gid`` ('' when the system has none)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def uid_for(name: str, fallback: int) -> int:
    """The local uid of user ``name``, or ``fallback`` (the source's number) when it has none."""
    if not name:
        return fallback
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return fallback


@lru_cache(maxsize=4096)
def gid_for(name: str, fallback: int) -> int:
    """The local gid of group ``name``, or ``fallback``."""
    if not name:
        return fallback
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return fallback


def kind_of(st: os.stat_result) -> str | None:
    """The replicated kind of an lstat result; None for sockets and other unsupported types."""
    m = st.st_mode
    if stat.S_ISREG(m):
        return "FILE"
    if stat.S_ISDIR(m):
        return "DIR"
    if stat.S_ISLNK(m):
        return "SYMLINK"
    if stat.S_ISCHR(m):
        return "CHR"
    if stat.S_ISBLK(m):
        return "BLK"
    if stat.S_ISFIFO(m):
        return "FIFO"
    return None


def read_xattrs(path: str, *, xattrs: bool = True, acls: bool = True) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes of ``path`` (not following symlinks), sorted; () where unsupported.

    ``xattrs`` selects the ordinary ones, ``acls`` the POSIX ACL ones.
    """
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return ()
        raise
    out = []
    for name in sorted(names):
        if not (acls if name in ACL_XATTRS else xattrs):
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    return tuple(out)


def capture(path: str, st: os.stat_result, *, xattrs: bool = True, acls: bool = True) -> FileMeta | None:
    """The FileMeta of ``path`` whose lstat is ``st`` (None for an unsupported type such as a socket)."""
    kind = kind_of(st)
    if kind is None:
        return None
    link = os.readlink(path) if kind == "SYMLINK" else ""
    return FileMeta(
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind == "FILE" else 0,
        rdev=st.st_rdev if kind in ("CHR", "BLK") else 0,
        link=link,
        xattrs=read_xattrs(path, xattrs=xattrs, acls=acls) if (xattrs or acls) else (),
    )

"""Applying attributes on a target: a pure plan, then the system calls.

The plan is ordered so that nothing undoes an earlier step: owner first (``chown`` clears setuid and
setgid), then extended attributes and ACLs, then the permission bits, then mtime last (every other
change would bump it). Symlinks get ``lchown`` and their own mtime, never a chmod (Linux has none).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Literal

from common.config_files import PreserveSpec
from filesync.meta import ACL_XATTRS, FileMeta, gid_for, uid_for

ActionKind = Literal["chown", "setxattr", "rmxattr", "chmod", "utime"]


@dataclass(frozen=True)
class Action:
    """One attribute change. ``value`` is the uid/gid pair, mode, xattr value or mtime."""

    kind: ActionKind
    name: str = ""
    value: object = None


def wanted_owner(meta: FileMeta, preserve: PreserveSpec) -> tuple[int, int]:
    """The uid and gid the target should give ``meta``: by name when the target knows it, else by number."""
    if preserve.numeric_ids:
        return meta.uid, meta.gid
    return uid_for(meta.user, meta.uid), gid_for(meta.group, meta.gid)


def plan_attrs(
    meta: FileMeta,
    preserve: PreserveSpec,
    current: FileMeta | None,
    owner: tuple[int, int],
    *,
    is_root: bool = True,
) -> list[Action]:
    """The ordered actions that give an entry (now as ``current``) the attributes of ``meta``.

    ``owner`` is the (uid, gid) resolved by :func:`wanted_owner`. ``current`` None means "freshly
    created, assume nothing matches".
    """
    actions: list[Action] = []
    symlink = meta.kind == "SYMLINK"
    uid, gid = owner
    want_uid = uid if (preserve.owner and is_root) else -1
    want_gid = gid if preserve.group else -1
    differs = current is None or (want_uid != -1 and current.uid != want_uid) or (
        want_gid != -1 and current.gid != want_gid)
    if differs and (want_uid != -1 or want_gid != -1):
        actions.append(Action("chown", value=(want_uid, want_gid)))
    if not symlink:
        have = dict(current.xattrs) if current is not None else {}
        want = {n: v for n, v in meta.xattrs if (preserve.acls if n in ACL_XATTRS else preserve.xattrs)}
        for name in sorted(want):
            if have.get(name) != want[name]:
                actions.append(Action("setxattr", name=name, value=want[name]))
        for name in sorted(have):
            managed = preserve.acls if name in ACL_XATTRS else preserve.xattrs
            if managed and name not in want and not name.startswith("security."):
                actions.append(Action("rmxattr", name=name))
        chown_clears = any(a.kind == "chown" for a in actions) and meta.mode & 0o6000
        if preserve.perms and (current is None or current.mode != meta.mode or chown_clears):
            actions.append(Action("chmod", value=meta.mode))
    if preserve.times and (current is None or current.mtime_ns != meta.mtime_ns or actions):
        actions.append(Action("utime", value=meta.mtime_ns))
    return actions


def apply_actions(path: str, actions: list[Action]) -> None:
    """Run ``actions`` on ``path`` without following symlinks. OSError propagates to the caller."""
    for action in actions:
        if action.kind == "chown":
            owner = action.value
            assert isinstance(owner, tuple)
            os.chown(path, int(owner[0]), int(owner[1]), follow_symlinks=False)
        elif action.kind == "setxattr":
            try:
                os.setxattr(path, action.name, action.value, follow_symlinks=False)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        elif action.kind == "rmxattr":
            try:
                os.removexattr(path, action.name, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        elif action.kind == "chmod":
            os.chmod(path, action.value)  # type: ignore[arg-type]
        elif action.kind == "utime":
            ns = int(action.value)  # type: ignore[call-overload]
            os.utime(path, ns=(ns, ns), follow_symlinks=False)

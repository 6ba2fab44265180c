"""Errors of filesync. Each one names what went wrong and the fix; the CLI prints them without a traceback."""

from __future__ import annotations

from common.errors import ArkError


class FilesyncError(ArkError):
    """Root of every error filesync raises on purpose."""

    exit_code = 20


class SourceMissing(FilesyncError):
    """The source directory of a file set does not exist or is not a directory."""

    exit_code = 21


class SourcePermission(FilesyncError):
    """Some source entries could not be read; the rest of the set was still shipped."""

    exit_code = 22


class TargetFull(FilesyncError):
    """The target filesystem ran out of space; the target file was left as it was."""

    exit_code = 23


class TargetPermission(FilesyncError):
    """The target refused a write (read-only or immutable filesystem, missing rights)."""

    exit_code = 24


class TransferCorrupt(FilesyncError):
    """A chunk or a whole file failed its hash after transfer; it is re-requested."""

    exit_code = 25


class NotConverged(FilesyncError):
    """Targets did not acknowledge the pass before the timeout."""

    exit_code = 26


class UnknownFileSet(FilesyncError):
    """The config names no file set (or target) by that name."""

    exit_code = 27

"""Errors of filesync. Each one names what went wrong and the fix; the CLI prints them without a traceback."""

from __future__ import annotations

from common.errors import ArkError
from common.exit_codes import ExitCode


class FilesyncError(ArkError):
    """Root of every error filesync raises on purpose."""

    exit_code = ExitCode.FILES


class SourceMissing(FilesyncError):
    """The source directory of a file set does not exist or is not a directory."""

    exit_code = ExitCode.FILES_SOURCE_MISSING


class SourcePermission(FilesyncError):
    """Some source entries could not be read; the rest of the set was still shipped."""

    exit_code = ExitCode.FILES_SOURCE_PERMISSION


class TargetFull(FilesyncError):
    """The target filesystem ran out of space; the target file was left as it was."""

    exit_code = ExitCode.FILES_TARGET_FULL


class TargetPermission(FilesyncError):
    """The target refused a write (read-only or immutable filesystem, missing rights)."""

    exit_code = ExitCode.FILES_TARGET_PERMISSION


class TransferCorrupt(FilesyncError):
    """A chunk or a whole file failed its hash after transfer; it is re-requested."""

    exit_code = ExitCode.FILES_TRANSFER_CORRUPT


class NotConverged(FilesyncError):
    """Targets did not acknowledge the pass before the timeout."""

    exit_code = ExitCode.FILES_NOT_CONVERGED


class UnknownFileSet(FilesyncError):
    """The config names no file set (or target) by that name."""

    exit_code = ExitCode.FILES_UNKNOWN_SET

"""Every exit code of ``ark``, in one table: what it means and what to do (the README's table is checked
against this one by tests/unit/test_exit_codes.py, so the two cannot drift apart).

A service manager or a script can act on the code alone; the ``error:`` and ``fix:`` lines say the rest.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of ``ark`` (stable: scripts depend on them)."""

    OK = 0
    ERROR = 1
    CONFIG = 2
    KAFKA = 3
    SOURCE = 4
    TARGET = 5
    PREREQUISITE = 6
    FENCED = 7
    SOURCE_LOG_LOST = 8
    DATA_ERROR = 9
    NOT_SYNCED = 10
    VERIFY_DIFFERENT = 11
    VERIFY_INCOMPLETE = 12
    RETENTION_GAP = 13
    RETRANSMIT_FAILED = 14
    SOURCE_GAP_REACHED = 15
    CHECK_FAILED = 16
    NO_GAP_TO_ACCEPT = 17
    SAME_DATABASE = 18
    IS_A_SOURCE = 19
    FILES = 20
    FILES_SOURCE_MISSING = 21
    FILES_SOURCE_PERMISSION = 22
    FILES_TARGET_FULL = 23
    FILES_TARGET_PERMISSION = 24
    FILES_TRANSFER_CORRUPT = 25
    FILES_NOT_CONVERGED = 26
    FILES_UNKNOWN_SET = 27
    IDENTITY_CHANGED = 28
    NOT_EMPTY = 29
    ENTRY_TOO_LARGE = 30
    APPLIER_RUNNING = 31
    NOT_PROMOTABLE = 32
    SCHEMA_CHANGE_FAILED = 33
    NOT_PRIMARY = 40
    HANDOVER_REFUSED = 41
    HANDOVER_FAILED = 42
    INTERRUPTED = 130


#: One line per code: what it means (and, where it helps, the way out).
MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "success (`ark verify`: primary and standby are equal, or every difference was repaired)",
    ExitCode.ERROR: "another Ark error",
    ExitCode.CONFIG: "bad config or bad arguments",
    ExitCode.KAFKA: "Kafka unreachable (`ark status` still prints what the databases say)",
    ExitCode.SOURCE: "the primary refused or is unreachable",
    ExitCode.TARGET: "a standby refused or is unreachable",
    ExitCode.PREREQUISITE: "a prerequisite of the primary or a standby is missing (`ark check` lists them all)",
    ExitCode.FENCED: "fenced: another capture of the group took over",
    ExitCode.SOURCE_LOG_LOST: "the source lost part of its log (slot recreated): capture refuses; see "
                              "`ark capture --accept-gap`",
    ExitCode.DATA_ERROR: "a data error on a standby under `on_data_error: stop` (names transaction, table, key, "
                         "position)",
    ExitCode.NOT_SYNCED: "the standby was never synced (`ark sync`)",
    ExitCode.VERIFY_DIFFERENT: "`ark verify`: differences found",
    ExitCode.VERIFY_INCOMPLETE: "`ark verify`: a table could not be compared",
    ExitCode.RETENTION_GAP: "the redo topic no longer holds what the standby needs (retention): `ark resync`",
    ExitCode.RETRANSMIT_FAILED: "a corrupt entry cannot be retransmitted (the source's log moved on): `ark resync`",
    ExitCode.SOURCE_GAP_REACHED: "the standby reached a source gap the operator accepted: `ark resync`",
    ExitCode.CHECK_FAILED: "`ark check` found problems (each one is listed with its fix)",
    ExitCode.NO_GAP_TO_ACCEPT: "`ark capture --accept-gap`, but the source still holds everything: nothing to accept",
    ExitCode.SAME_DATABASE: "refused: the standby is the primary's database (or was recorded as the group's "
                            "primary), or the same database as another standby; nothing was written",
    ExitCode.IS_A_SOURCE: "refused: the standby holds a replication slot or publication (a capture reads it); set "
                          "`chain: true` if that is meant",
    ExitCode.FILES: "another filesync error",
    ExitCode.FILES_SOURCE_MISSING: "filesync: the set's source directory is missing",
    ExitCode.FILES_SOURCE_PERMISSION: "filesync: some source entries could not be read (the rest was shipped)",
    ExitCode.FILES_TARGET_FULL: "filesync: a target filesystem is full (the target file was left as it was)",
    ExitCode.FILES_TARGET_PERMISSION: "filesync: a target refused a write",
    ExitCode.FILES_TRANSFER_CORRUPT: "filesync: a transfer failed its hash (it is requested again)",
    ExitCode.FILES_NOT_CONVERGED: "filesync: targets did not acknowledge the pass in time",
    ExitCode.FILES_UNKNOWN_SET: "filesync: no such file set or target",
    ExitCode.IDENTITY_CHANGED: "the database behind a standby's address is not the one that was synced (restored "
                               "or replaced): `ark sync`",
    ExitCode.NOT_EMPTY: "refused: `ark sync` would replace data Ark did not put there (`--overwrite` if it may)",
    ExitCode.ENTRY_TOO_LARGE: "the capture met an entry larger than the redo topic's message limit allows, even "
                              "cut into parts (names the table and key columns, never values)",
    ExitCode.APPLIER_RUNNING: "another applier already applies to this standby (names its host, pid and since); "
                              "only one may: stop one of them",
    ExitCode.NOT_PROMOTABLE: "`ark check --promotable`: the standby lacks something a promotion needs (each missing "
                             "object is listed with its fix)",
    ExitCode.SCHEMA_CHANGE_FAILED: "a standby cannot follow a DDL of the primary (an extension or object missing "
                                   "there): it stopped before it, naming the object, the statement and the fix",
    ExitCode.NOT_PRIMARY: "refused: the node is not the group's primary in the current epoch (a capture there would "
                          "publish for a reign that ended); `ark topology` shows the roles",
    ExitCode.HANDOVER_REFUSED: "`ark switchover`/`ark failover`/`ark cutover` refused before changing anything, or "
                               "undone (names why: a more advanced standby, a lagging target, a missing agent, a "
                               "verify that found differences...)",
    ExitCode.HANDOVER_FAILED: "`ark switchover`/`ark failover`/`ark cutover` stopped part-way: the message names the "
                              "step reached and the command that completes it",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def markdown_table() -> str:
    """The README's exit-code table."""
    lines = ["| code | meaning |", "|---:|---|"]
    lines += [f"| {int(code)} | {MEANING[code]} |" for code in ExitCode]
    return "\n".join(lines)

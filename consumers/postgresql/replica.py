"""A PostgreSQL standby applied as a replica, by one applier at a time.

**As a replica.** Every session of the applier runs with ``session_replication_role = replica``, as
PostgreSQL's own logical replication workers do: ordinary user triggers and the foreign-key triggers
(``ON DELETE CASCADE`` included) do not fire while the stream's rows are written. The primary ran them;
their effects are already in the stream, and firing them again would write rows twice or delete rows
the stream deletes next (an apply error). Triggers an administrator marked ``ENABLE REPLICA`` or
``ENABLE ALWAYS`` still fire, as on a native subscriber. Setting the parameter takes a superuser, or on
PostgreSQL 15 and later ``GRANT SET ON PARAMETER session_replication_role``. Without it the applier
refuses to write (``ark check`` names the grant) rather than apply with triggers firing.

**Uniqueness at commit.** Each apply transaction runs ``SET CONSTRAINTS ALL DEFERRED``: a DEFERRABLE
unique or exclusion constraint on the standby is checked when the target transaction commits, which
is always at a boundary between whole source transactions. Rows that exchange a unique value inside
one source transaction (valid on the primary at its commit, or at its statement end) are grouped and
reordered by the set-based path; they must not trip a check between two of them. Non-deferrable
constraints are checked per row as always: a standby's secondary unique constraints should be created
DEFERRABLE (the key that finds rows stays an immediate primary key).

**One applier per standby.** The applier holds a session-level advisory lock, keyed by group and
standby, on its own connection for its whole life, and takes it again when it reconnects; a second
applier cannot take it and exits with :class:`~consumers.errors.ApplierRunning`, naming the holder
(its ``application_name`` says host and pid; ``since`` is when its session started). The state row
is advanced with a compare-and-set on the ``next_offset`` and epoch it was read with, so an applier
that lost its lock (a network cut, its session terminated) can never move the state backwards.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

from common.errors import PrerequisiteError
from consumers.base import ApplyState, Problem
from consumers.errors import ApplierRunning, StateMoved
from consumers.postgresql.sql import quote_ident

SET_REPLICA_SQL = "SET session_replication_role = replica"
#: Run at the start of every apply transaction (see the module docstring).
DEFER_SQL = "SET CONSTRAINTS ALL DEFERRED"

TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%s)"

#: Who holds the advisory lock (a bigint key: classid = its high half, objid = its low half, objsubid 1).
HOLDER_SQL = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
"""

#: The state row moves only from the row this applier read (compare-and-set; see the module docstring).
CAS_STATE_SQL = """
UPDATE ark.apply_state SET topic = %s, "partition" = %s, next_offset = %s, position = %s, position_key = %s,
    epoch = %s, commit_time_us = %s, applied_at_us = %s, applied_txns = %s, extra = %s
WHERE "group" = %s AND standby = %s AND next_offset = %s AND epoch = %s
"""

CURRENT_STATE_SQL = 'SELECT next_offset, epoch FROM ark.apply_state WHERE "group" = %s AND standby = %s'


def application_name(standby: str) -> str:
    """What the applier's sessions are called in ``pg_stat_activity``: standby, host and pid (63 bytes at most)."""
    tail = f" pid {os.getpid()}"
    head = f"ark apply {standby} on {socket.gethostname()}"
    return head[: 63 - len(tail)] + tail


def lock_key(group: str, standby: str) -> int:
    """The advisory lock's bigint key for (group, standby) (stable across processes and hosts)."""
    digest = hashlib.sha256(f"ark-apply\0{group}\0{standby}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_halves(key: int) -> tuple[int, int]:
    """(classid, objid) of ``key`` in ``pg_locks``."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def replica_problem(standby: str, user: str, db: str, version: int) -> Problem:
    """The user may not set ``session_replication_role``: what it means and the grant that fixes it."""
    quser = quote_ident(user)
    grant = (f"as a superuser on {db}: GRANT SET ON PARAMETER session_replication_role TO {quser}" if version >= 150000
             else f"ALTER ROLE {quser} SUPERUSER (PostgreSQL before 15 lets only superusers set it)")
    return Problem(f"user {user} may not set session_replication_role on standby {standby}: the applier must, so "
                   "that the standby's own triggers and foreign-key actions do not fire on replicated rows", grant)


def replica_refusal(problem: Problem) -> PrerequisiteError:
    """The error a write raises when the session could not become a replica."""
    return PrerequisiteError(problem.what, fix=problem.fix)


def holder_error(standby: str, group: str, row: tuple[Any, ...] | None) -> ApplierRunning:
    """Another applier holds the standby: name it."""
    if row is None:
        who = "another applier (it let go a moment ago, or is not visible to this user in pg_stat_activity)"
    else:
        pid, app, addr, since = row
        who = f"{app or 'a session'} (PostgreSQL backend {pid}, client {addr}), holding it since {since}"
    return ApplierRunning(
        f"standby {standby} of group {group} already has an applier: {who}",
        fix=f"only one 'ark apply {standby}' may run: stop the other one, or this one; if the other one is gone "
            "for good, its session ends when PostgreSQL notices (or: SELECT pg_terminate_backend(<backend pid>))")


def cas_params(new: ApplyState, previous: ApplyState, params: list[Any]) -> list[Any]:
    """Parameters of :data:`CAS_STATE_SQL` from the upsert's ``params`` (state.state_params(new))."""
    return [*params[2:], new.group, new.standby, previous.next_offset, previous.epoch]


def state_moved(standby: str, previous: ApplyState, found: tuple[Any, ...] | None) -> StateMoved:
    """The compare-and-set found another row than the one read: someone else applied."""
    now = "no state row" if found is None else f"next offset {found[0]}, epoch {found[1]}"
    return StateMoved(
        f"the state row of standby {standby} changed under this applier (it read next offset "
        f"{previous.next_offset}, epoch {previous.epoch}; the standby now has {now}): another applier or "
        "'ark sync' wrote it; nothing of this transaction was committed",
        fix=f"run one 'ark apply {standby}' at a time; this one reads the state again (or exits if another holds "
            "the standby)")

"""How much WAL the capture's slot holds back on the primary, what bounds it, and the free disk under it.

A logical slot keeps every WAL segment from its ``restart_lsn`` on. Ark confirms a position only once
Kafka holds it *and* it is older than ``capture.retransmit_window_s`` (900 s by default: the WAL a
corrupt entry can be re-read from), so even a healthy capture holds that window's WAL; a stopped or
lagging capture holds more and more. Without ``max_slot_wal_keep_size`` nothing bounds it and the
primary's disk fills (PostgreSQL stops). With it, PostgreSQL invalidates the slot instead (the capture
then refuses with exit 8 and the standbys need a resync): the primary keeps running, which is the
right trade for a system that must not stop.

Free space: PostgreSQL reports the size of its WAL directory (``pg_ls_waldir()``) but not the free
space of the filesystem under it. When the primary runs on this host (a local address or a unix
socket) and its ``data_directory`` is readable here, it is measured with ``statvfs`` on ``pg_wal``;
otherwise it is reported as unknown, with where to look.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg2

from common.problems import Problem

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "")

SLOT_SQL = """
SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'),
       s.slot_name IS NOT NULL,
       CASE WHEN s.restart_lsn IS NOT NULL THEN pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint END,
       s.wal_status, s.safe_wal_size,
       current_setting('data_directory', true)
FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""
WALDIR_SQL = "SELECT coalesce(sum(size), 0)::bigint, count(*) FROM pg_ls_waldir()"


@dataclass(frozen=True)
class WalFacts:
    """What the primary says (None: could not be read with this role)."""

    slot: str
    keep_size_mb: int  # max_slot_wal_keep_size in MB, -1 unlimited
    slot_exists: bool
    held_bytes: int | None
    wal_status: str | None
    safe_wal_size: int | None
    wal_dir_bytes: int | None
    free_bytes: int | None
    free_how: str
    retransmit_window_s: float


def size(n: int | None) -> str:
    """Bytes for people: '512 MB', '3.2 GB'."""
    if n is None:
        return "unknown"
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def free_space(host: str, data_directory: str | None) -> tuple[int | None, str]:
    """Free bytes under the primary's pg_wal, and how that was found (or why it is unknown)."""
    if not data_directory:
        return None, ("unknown: this role may not read data_directory (GRANT pg_read_all_settings) and PostgreSQL "
                      "does not report free disk space")
    wal = os.path.join(data_directory, "pg_wal")
    if not (host in _LOCAL_HOSTS or host.startswith("/")):
        return None, (f"unknown: the primary runs on {host}; PostgreSQL does not report free disk space: check {wal} "
                      "there")
    try:
        st = os.statvfs(wal)
    except OSError as exc:
        return None, f"unknown: statvfs of {wal} failed here ({exc.strerror})"
    return st.f_bavail * st.f_frsize, f"statvfs of {wal} (the primary is on this host)"


def read_facts(conn: Any, slot: str, host: str, retransmit_window_s: float) -> WalFacts:
    """The facts, from the capture's catalog connection (psycopg2, autocommit)."""
    with conn.cursor() as cur:
        cur.execute(SLOT_SQL, (slot,))
        keep, exists, held, status, safe, datadir = cur.fetchone()
        try:
            cur.execute(WALDIR_SQL)
            wal_dir: int | None = int(cur.fetchone()[0])
        except psycopg2.Error:  # insufficient privilege (pg_ls_waldir needs pg_monitor): reported as unknown
            wal_dir = None
    free, how = free_space(host, datadir)
    return WalFacts(slot, int(keep if keep is not None else -1), bool(exists), None if held is None else int(held),
                    status, None if safe is None else int(safe), wal_dir, free, how, retransmit_window_s)


def summary(f: WalFacts) -> str:
    """One sentence for ``ark check`` and ``ark status``."""
    keep = "unlimited (-1)" if f.keep_size_mb < 0 else size(f.keep_size_mb << 20)
    held = (f"slot {f.slot} holds back {size(f.held_bytes)} of WAL (wal_status {f.wal_status or '?'}"
            + (f", {size(f.safe_wal_size)} more before max_slot_wal_keep_size" if f.safe_wal_size is not None else "")
            + ")") if f.slot_exists else f"slot {f.slot} does not exist yet"
    return (f"{held}; max_slot_wal_keep_size {keep}; pg_wal holds {size(f.wal_dir_bytes)}; free under it: "
            f"{size(f.free_bytes)} ({f.free_how}); the {f.retransmit_window_s:g} s retransmit window "
            "(capture.retransmit_window_s) is part of what the slot holds")


def warnings(f: WalFacts, *, settings: bool = True) -> list[Problem]:
    """What threatens the primary's disk or the slot, each with its fix (non-fatal except a lost slot).
    ``settings``: also the advice on an unbounded slot (``ark check``; ``ark status`` shows present dangers)."""
    out: list[Problem] = []
    suggest = "50GB" if f.free_bytes is None else f"{max(1, int(f.free_bytes * 0.5) >> 30)}GB"
    if f.keep_size_mb < 0 and settings:
        out.append(Problem(
            "max_slot_wal_keep_size is -1: nothing bounds the WAL the replication slot holds back; a capture "
            "stopped for long fills the primary's disk and PostgreSQL stops",
            f"ALTER SYSTEM SET max_slot_wal_keep_size = '{suggest}'; SELECT pg_reload_conf();  -- below the free "
            "space under pg_wal: past it PostgreSQL drops the slot (the capture refuses, exit 8, standbys need "
            "'ark resync') instead of stopping", fatal=False))
    if f.wal_status == "lost":
        out.append(Problem(f"slot {f.slot} is lost (wal_status lost): the WAL it needed was removed",
                           "'ark capture --accept-gap', then 'ark resync' each standby"))
    elif f.wal_status == "unreserved":
        out.append(Problem(f"slot {f.slot} is about to lose WAL (wal_status unreserved): it holds more than "
                           "max_slot_wal_keep_size", "let 'ark capture' catch up now (is it running?)", fatal=False))
    if f.held_bytes is not None and f.free_bytes is not None and f.held_bytes > f.free_bytes // 2:
        out.append(Problem(
            f"slot {f.slot} holds back {size(f.held_bytes)} of WAL while only {size(f.free_bytes)} is free under "
            "pg_wal: the disk fills before long",
            f"let 'ark capture' catch up (is it running?); free disk space; bound it: ALTER SYSTEM SET "
            f"max_slot_wal_keep_size = '{suggest}'; SELECT pg_reload_conf();", fatal=False))
    elif f.safe_wal_size is not None and f.keep_size_mb > 0 and f.safe_wal_size < (f.keep_size_mb << 20) // 5:
        out.append(Problem(
            f"slot {f.slot} is within {size(f.safe_wal_size)} of max_slot_wal_keep_size: past it PostgreSQL drops "
            "the slot", "let 'ark capture' catch up (is it running?), or raise max_slot_wal_keep_size", fatal=False))
    return out

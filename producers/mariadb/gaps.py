"""Where a MariaDB capture starts, and what is missing when the binlog it needs is gone.

MariaDB purges binlog files by age (``binlog_expire_logs_seconds``) or on ``PURGE BINARY LOGS``,
whoever still needs them, and ``RESET MASTER`` starts over at ``.000001``. Every binlog file starts
with a GTID-list event: the last GTID of each replication domain written before that file. So the
capture can tell exactly whether its resume position is still served, and when not, which GTIDs
are missing: those after its own GTID state up to the oldest file's GTID list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from producers.mariadb import catalog
from schemas.positions import parse_mariadb

_GTID = re.compile(r"(\d+)-(\d+)-(\d+)")


def gtid_state_text(state: Mapping[int, tuple[int, int]]) -> str:
    """``domain-server-seq`` of every domain, comma-separated, by domain."""
    return ",".join(f"{d}-{s}-{q}" for d, (s, q) in sorted(state.items()))


def parse_state(text: str) -> dict[int, tuple[int, int]]:
    """The domain -> (server, seq) of a GTID state text."""
    return {int(d): (int(s), int(q)) for d, s, q in _GTID.findall(text)}


def _seq(name: str) -> int:
    return int(name.rpartition(".")[2])


def oldest_gtid_list(conn: Any, file: str) -> dict[int, tuple[int, int]]:
    """The GTID list at the start of binlog ``file`` (the last GTID per domain before it)."""
    for row in catalog.query(conn, f"SHOW BINLOG EVENTS IN '{file}' LIMIT 5"):
        if str(row[2]) == "Gtid_list":
            return parse_state(str(row[5]))
    return {}


def _covers(ours: Mapping[int, tuple[int, int]], before: Mapping[int, tuple[int, int]]) -> bool:
    return all(ours.get(d, (0, 0))[1] >= seq for d, (_s, seq) in before.items())


def gap_sentence(conn: Any, settings: Any, resume_text: str) -> str | None:
    """Why the server cannot supply everything after ``resume_text`` (a sentence naming the range), or None."""
    file, _offset, gtid = parse_mariadb(resume_text.removeprefix("<"))
    files = catalog.binary_logs(conn)
    where = catalog.where(settings)
    if not files:
        return f"MariaDB {where} has no binary log any more, but Kafka holds transactions up to {resume_text}"
    if file in files:
        return _rewritten(conn, where, resume_text, file, _offset, gtid)
    oldest, newest = files[0], files[-1]
    if _seq(file) > _seq(newest):
        return (f"MariaDB {where} has binlog files up to {newest} only, but Kafka holds transactions up to "
                f"{resume_text}: the binlog was reset (RESET MASTER?) and what was written in between is lost")
    before = oldest_gtid_list(conn, oldest)
    ours = parse_state(gtid)
    if _covers(ours, before):
        return None  # every transaction before the oldest file is already in Kafka
    expire = catalog.variables(conn, ["binlog_expire_logs_seconds"]).get("binlog_expire_logs_seconds", "?")
    missing = ", ".join(f"domain {d}: {ours.get(d, (0, 0))[1] + 1}..{seq} ({d}-{s}-{seq} is the last)"
                        for d, (s, seq) in sorted(before.items()) if ours.get(d, (0, 0))[1] < seq)
    return (f"MariaDB {where} purged the binlog Kafka still needs: Kafka ends at {resume_text}, the oldest binlog "
            f"held is {oldest} (binlog_expire_logs_seconds={expire}); missing GTIDs {missing}")


def _rewritten(conn: Any, where: str, resume_text: str, file: str, offset: int, gtid: str) -> str | None:
    """Whether the binlog at ``file``:``offset`` is still the one Kafka was fed from: the server's GTID state
    there (``BINLOG_GTID_POS``) must be what the capture recorded, for every domain it recorded. After a
    ``RESET MASTER`` the file names come back with other transactions in them."""
    ours = parse_state(gtid)
    if not ours:
        return None
    rows = catalog.query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, offset))
    there = rows[0][0] if rows else None
    theirs = parse_state(str(there)) if there is not None else {}
    if there is not None and all(theirs.get(d) == v for d, v in ours.items()):
        return None
    found = str(there) if there is not None else "no event boundary there"
    return (f"MariaDB {where}: the binlog at {file}:{offset} is not the one Kafka was fed from (Kafka recorded GTID "
            f"state {gtid}, the server has {found}): the binlog was reset (RESET MASTER?) and what was written "
            "in between is lost")


def start_point(conn: Any, resume_text: str | None) -> tuple[str, int, str]:
    """(file, offset, GTID state) to start reading at: the resume position, or the oldest binlog's start
    when the resume file was purged without loss (or when nothing was published yet)."""
    files = catalog.binary_logs(conn)
    if resume_text is None:
        return files[0], 4, ""
    file, offset, gtid = parse_mariadb(resume_text.removeprefix("<"))
    if file in files:
        return file, offset, gtid
    return files[0], 4, gtid

"""What a MariaDB primary needs for capture, each problem with its fix (``ark check``)."""

from __future__ import annotations

from typing import Any

import pymysql

from common.problems import Problem
from producers.mariadb import catalog

_REQUIRED = {
    "log_bin": ("ON", "start the server with log_bin (e.g. log_bin=binlog in my.cnf) and restart it"),
    "binlog_format": ("ROW", "SET GLOBAL binlog_format = 'ROW' and binlog_format=ROW in my.cnf"),
    "binlog_row_image": ("FULL", "SET GLOBAL binlog_row_image = 'FULL' and binlog_row_image=FULL in my.cnf"),
    "binlog_row_metadata": ("FULL", "SET GLOBAL binlog_row_metadata = 'FULL' and binlog_row_metadata=FULL in "
                                    "my.cnf (MariaDB >= 10.5): table maps then carry column names and keys"),
    "log_bin_compress": ("OFF", "SET GLOBAL log_bin_compress = OFF"),
}


def problems(conn: Any, settings: Any) -> list[Problem]:
    """Every problem of the primary; fatal ones stop capture."""
    found: list[Problem] = []
    names = [*list(_REQUIRED), "version", "binlog_expire_logs_seconds"]
    got = catalog.variables(conn, names)
    for name, (want, fix) in _REQUIRED.items():
        have = got.get(name, "")
        if have.upper() != want:
            found.append(Problem(f"{name} is {have or 'not set'} on {catalog.where(settings)}; capture needs {want}",
                                 fix))
    version = got.get("version", "")
    if "mariadb" not in version.lower():
        found.append(Problem(f"{catalog.where(settings)} runs {version or 'an unknown server'}, not MariaDB",
                             "use engine: mariadb only for MariaDB servers (>= 10.5)"))
    try:
        catalog.query(conn, "SHOW BINARY LOGS")
    except pymysql.err.Error as exc:
        err = catalog.source_error(settings, exc)
        found.append(Problem(f"the user cannot list binary logs: {err.message}",
                             f"GRANT BINLOG MONITOR, REPLICATION SLAVE, SELECT, RELOAD ON *.* TO {settings.user}"))
    expire = got.get("binlog_expire_logs_seconds", "0")
    if expire not in ("", "0") and int(expire) < 86400:
        found.append(Problem(f"binlog_expire_logs_seconds is {expire}: a capture outage longer than that loses "
                             "binlog the capture needs (it then refuses, naming the missing GTIDs)",
                             "keep binlogs for days, e.g. SET GLOBAL binlog_expire_logs_seconds = 604800",
                             fatal=False))
    tables = catalog.matched_tables(conn, settings.tables)
    if not tables:
        found.append(Problem(f"no table of {catalog.where(settings)} matches {list(settings.tables)}",
                             "set primary.tables to schema.table patterns, e.g. [bank.*]", fatal=False))
    for schema, table in tables:
        try:
            shape = catalog.catalog_shape(conn, schema, table)
        except ValueError as exc:
            found.append(Problem(f"cannot capture {exc}", "change the column's type, or leave the table out of "
                                 "primary.tables"))
            continue
        if shape is not None and not shape.key:
            found.append(Problem(f"table {schema}.{table} has no primary key and no unique index on NOT NULL "
                                 "columns: it replicates with identity 'full' (a standby finds the row of each "
                                 "UPDATE and DELETE by all its values, scanning the table)",
                                 f"ALTER TABLE {schema}.{table} ADD PRIMARY KEY (...) for faster apply", fatal=False))
    return found

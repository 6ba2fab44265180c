"""Classifying MariaDB errors on the standby: transient (retry), data (stop or resync), target (fix it)."""

from __future__ import annotations

import re
from typing import Any

from common.errors import ArkError, TargetError
from consumers.errors import DataApplyError, TransientApplyError

#: Lost connection, server going away or shutting down, deadlock, lock wait timeout, killed query,
#: read-only while the server restarts, too many connections.
TRANSIENT = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 1158, 1159, 1160, 1161})
#: The data disagrees with the stream: duplicate key, foreign key, NULL, out of range, bad value,
#: too long, unknown column or table (the standby's shape diverged).
DATA = frozenset({1062, 1451, 1452, 1048, 1264, 1265, 1366, 1406, 1292, 1054, 1146, 1364, 1411, 1690, 4025, 3819,
                  1416, 1367, 1586, 1557})


def code_of(exc: BaseException) -> int:
    """The server error number of a PyMySQL error (0 when there is none)."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0


def message_of(exc: BaseException) -> str:
    """The server's one-line message."""
    return " ".join(str(exc.args[1] if len(exc.args) > 1 else exc).split())


_VALUE = re.compile(r"value: '.*' for column", re.S)


def redacted(code: int, text: str) -> str:
    """The server's message without the row value some data errors quote (a key value stays: it names the row)."""
    return text if code == 1062 else _VALUE.sub("value for column", text)


def classify(exc: BaseException, *, what: str, settings: Any, table: str = "", txn_id: str = "",
             position: str = "", key: object = None) -> ArkError:
    """The Ark error for a driver error raised while doing ``what`` (names table, transaction, key)."""
    code, text = code_of(exc), message_of(exc)
    where = f"standby {settings.name} ({settings.user}@{settings.host}:{settings.port})"
    if code in TRANSIENT:
        return TransientApplyError(f"{where}: {what} interrupted: {text} (error {code})",
                                   fix="Ark retries by itself; check the standby if it persists")
    if code in DATA:
        text = redacted(code, text)
        about = " ".join(p for p in (f"table {table}" if table else "", f"key {key}" if key is not None else "",
                                     f"source transaction {txn_id}" if txn_id else "",
                                     f"at {position}" if position else "") if p)
        return DataApplyError(f"{what} failed on {where}: {text} (error {code}){' — ' + about if about else ''}",
                              table=table, txn_id=txn_id, position=position, key=key,
                              fix=f"the standby diverged from the primary; resync the table (ark resync --table "
                                  f"{table or 'SCHEMA.TABLE'}) or check that nothing else writes to the standby")
    if code == 1045:
        return TargetError(f"{where}: access denied", fix="check the standby's user and password source")
    if code in (1044, 1142, 1227, 1290, 1836):
        return TargetError(f"{where}: {what}: {text} (error {code})",
                           fix="the applier's user needs ALL on the replicated schemas and ark, and READ_ONLY ADMIN "
                               "to write while read_only is ON (since 10.11 SUPER does not include it)")
    return TargetError(f"{where}: {what} failed: {text} (error {code})", fix="see the MariaDB error log")

"""Source positions per engine, and their order-preserving binary keys (part of the wire contract).

Bytewise comparison of keys gives commit order within one engine. Keys are fixed-width big-endian
so that any two positions of the same engine compare correctly.
"""

from __future__ import annotations

from schemas.entries import Position


def pg_lsn(value: int | str) -> Position:
    """A PostgreSQL LSN, from its integer or its ``X/Y`` text form."""
    if isinstance(value, str):
        try:
            hi, lo = value.split("/")
            number = (int(hi, 16) << 32) | int(lo, 16)
        except ValueError:
            raise ValueError(f"not a PostgreSQL LSN: {value!r} (expected X/Y in hex)") from None
    else:
        number = value
    if not 0 <= number < 1 << 64:
        raise ValueError(f"LSN out of range: {number}")
    return Position(text=f"{number >> 32:X}/{number & 0xFFFFFFFF:X}", key=number.to_bytes(8, "big"))


def oracle_scn(scn: int) -> Position:
    """An Oracle SCN (up to 2^64)."""
    return Position(text=f"scn:{scn}", key=scn.to_bytes(8, "big"))


def mssql_lsn(lsn: bytes) -> Position:
    """A SQL Server LSN (the 10-byte binary(10) of the CDC functions)."""
    if len(lsn) != 10:
        raise ValueError(f"SQL Server LSNs are 10 bytes, got {len(lsn)}")
    return Position(text="0x" + lsn.hex().upper(), key=bytes(lsn))


def binlog_position(file: str, offset: int) -> Position:
    """A MariaDB/MySQL binlog position: file sequence number then byte offset."""
    stem, _, seq = file.rpartition(".")
    if not stem or not seq.isdigit():
        raise ValueError(f"not a binlog file name: {file!r}")
    return Position(text=f"{file}:{offset}", key=int(seq).to_bytes(4, "big") + offset.to_bytes(8, "big"))


def mariadb_position(file: str, offset: int, gtid: str = "") -> Position:
    """A MariaDB binlog position with the server's GTID state there: ``binlog.000003:1234 gtid=0-1-42``.

    The key is the binlog file's sequence number and the offset (:func:`binlog_position`): binlog
    order is commit order on one server. A MariaDB GTID (``domain-server-seq``) orders transactions
    only within one domain, so it is not the key; the GTID state rides along in the text, to name
    what is missing when binlogs were purged and to show where a standby stands.
    """
    key = binlog_position(file, offset).key
    return Position(text=f"{file}:{offset} gtid={gtid}", key=key)


def parse_mariadb(text: str) -> tuple[str, int, str]:
    """(file, offset, GTID state) of a :func:`mariadb_position` text (ValueError otherwise)."""
    where, sep, gtid = text.partition(" gtid=")
    file, colon, offset = where.rpartition(":")
    if not sep or not colon or not offset.isdigit():
        raise ValueError(f"not a MariaDB position: {text!r} (expected FILE:OFFSET gtid=STATE)")
    binlog_position(file, int(offset))
    return file, int(offset), gtid


def just_before(position: Position) -> Position:
    """The greatest key strictly below ``position`` (same width): a floor that lets ``position`` itself through.

    Used where a position may be the start of a transaction that is not yet published: an idle
    source's log position, or the consistent point of an exported snapshot. Skipping entries ``<=``
    the floor then never skips a commit that sits exactly at ``position``.
    """
    number = int.from_bytes(position.key, "big")
    if number == 0:
        return Position(text=f"<{position.text}", key=position.key)
    return Position(text=f"<{position.text}", key=(number - 1).to_bytes(len(position.key), "big"))


def parse_text(text: str) -> Position | None:
    """The Position of any engine's text form above, or None when the text is not one of them.

    Lets an engine-neutral reader order a position it only has as text (a TableMeta's position).
    """
    try:
        if text.startswith("scn:"):
            return oracle_scn(int(text[4:]))
        if " gtid=" in text:
            file, at, gtid = parse_mariadb(text.removeprefix("<"))
            position = mariadb_position(file, at, gtid)
            return just_before(position) if text.startswith("<") else position
        if text.startswith("0x") and len(text) == 22:
            return mssql_lsn(bytes.fromhex(text[2:]))
        if "/" in text:
            return pg_lsn(text)
        if ":" in text:
            file, _, offset = text.rpartition(":")
            return binlog_position(file, int(offset))
    except ValueError:
        return None
    return None

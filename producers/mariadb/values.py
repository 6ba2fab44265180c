"""Decoding the binary row images of MariaDB row events into engine-neutral values.

One decoder per column, built once per table map (:func:`decoders`). Integers, floats, strings and
bytes become their neutral value directly; decimals, dates, times and bit strings are first turned
into MariaDB's own text form and then canonicalised by :meth:`ColumnType.from_text`, the function
the snapshot uses for the same type, so both paths agree value by value. Nothing is approximated:
a zero date stays ``0000-00-00``, an empty SET stays ``''``, and bytes that are not valid in the
column's character set raise :class:`ValueDecodeError` naming the column, never a replacement.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from producers.mariadb import tablemap as tm
from producers.mariadb.types import ColumnType
from schemas.entries import Value

#: (data, position) -> (value, new position)
Decoder = Callable[[bytes, int], tuple[Value, int]]

_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


class ValueDecodeError(ValueError):
    """A value of a row event that cannot be represented exactly."""


def _fixed(fmt: str) -> Decoder:
    s = struct.Struct(fmt)
    size, unpack = s.size, s.unpack_from

    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        return unpack(data, pos)[0], pos + size

    return dec


def _int24(unsigned: bool) -> Decoder:
    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        return int.from_bytes(data[pos:pos + 3], "little", signed=not unsigned), pos + 3

    return dec


def _ubigint_text(data: bytes, pos: int) -> tuple[Value, int]:
    return str(int.from_bytes(data[pos:pos + 8], "little")), pos + 8


def _float32(data: bytes, pos: int) -> tuple[Value, int]:
    return struct.unpack_from("<f", data, pos)[0], pos + 4


def decimal_text(data: bytes, pos: int, precision: int, scale: int) -> tuple[str, int]:
    """MariaDB's packed DECIMAL(precision, scale) at ``pos`` as canonical text ('-12.30')."""
    intg = precision - scale
    intg0, intg0x = divmod(intg, 9)
    frac0, frac0x = divmod(scale, 9)
    size = intg0 * 4 + _DIG2BYTES[intg0x] + frac0 * 4 + _DIG2BYTES[frac0x]
    buf = bytearray(data[pos:pos + size])
    negative = not buf[0] & 0x80
    buf[0] ^= 0x80
    if negative:
        buf = bytearray(b ^ 0xFF for b in buf)
    p = 0
    parts: list[str] = []

    def take(nbytes: int) -> int:
        nonlocal p
        v = int.from_bytes(buf[p:p + nbytes], "big")
        p += nbytes
        return v

    if intg0x:
        parts.append(str(take(_DIG2BYTES[intg0x])))
    for _ in range(intg0):
        parts.append(f"{take(4):09d}")
    integer = "".join(parts).lstrip("0") or "0"
    frac = [f"{take(4):09d}" for _ in range(frac0)]
    if frac0x:
        frac.append(f"{take(_DIG2BYTES[frac0x]):0{frac0x}d}")
    text = integer + ("." + "".join(frac) if scale else "")
    if negative and any(ch not in "0." for ch in text):
        text = "-" + text
    return text, pos + size


def _frac(data: bytes, pos: int, fsp: int) -> tuple[int, int]:
    """Fractional seconds of the 2-format temporal types: (microseconds, new position)."""
    nbytes = (fsp + 1) // 2
    if not nbytes:
        return 0, pos
    v = int.from_bytes(data[pos:pos + nbytes], "big")
    return v * 10 ** (6 - 2 * nbytes), pos + nbytes


def _usec(us: int, fsp: int) -> str:
    return f".{us:06d}"[: fsp + 1] if fsp else ""


def datetime2_text(data: bytes, pos: int, fsp: int) -> tuple[str, int]:
    """DATETIME2 (5 bytes big-endian + fraction) as 'YYYY-MM-DD HH:MM:SS[.f]'."""
    v = int.from_bytes(data[pos:pos + 5], "big") - 0x8000000000
    us, end = _frac(data, pos + 5, fsp)
    ymd, hms = v >> 17, v & 0x1FFFF
    ym, day = ymd >> 5, ymd & 31
    year, month = divmod(ym, 13)
    text = f"{year:04d}-{month:02d}-{day:02d} {hms >> 12:02d}:{(hms >> 6) & 63:02d}:{hms & 63:02d}"
    return text + _usec(us, fsp), end


def timestamp2_text(data: bytes, pos: int, fsp: int) -> tuple[str, int]:
    """TIMESTAMP2 (4 bytes big-endian seconds since the epoch + fraction) as UTC text; 0 is the zero value."""
    import datetime as _dt

    seconds = int.from_bytes(data[pos:pos + 4], "big")
    us, end = _frac(data, pos + 4, fsp)
    if seconds == 0 and us == 0:
        return "0000-00-00 00:00:00" + _usec(0, fsp), end
    moment = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + _usec(us, fsp), end


def time2_text(data: bytes, pos: int, fsp: int) -> tuple[str, int]:
    """TIME2 as '[-]HH:MM:SS[.f]' (MariaDB's range is -838:59:59.999999 .. 838:59:59.999999)."""
    if fsp >= 5:
        packed = int.from_bytes(data[pos:pos + 6], "big") - 0x800000000000
        end = pos + 6
    else:
        intpart = int.from_bytes(data[pos:pos + 3], "big") - 0x800000
        end = pos + 3
        frac = 0
        if fsp in (1, 2):
            frac = data[end]  # unsigned: a negative time stores its fraction reversed
            end += 1
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100
            frac *= 10000
        elif fsp in (3, 4):
            frac = int.from_bytes(data[end:end + 2], "big")
            end += 2
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x10000
            frac *= 100
        packed = (intpart << 24) + frac
    sign = "-" if packed < 0 else ""
    packed = abs(packed)
    hms, us = packed >> 24, packed % (1 << 24)
    text = f"{sign}{(hms >> 12) % 1024:02d}:{(hms >> 6) % 64:02d}:{hms % 64:02d}"
    return text + _usec(us, fsp), end


def date_text(data: bytes, pos: int) -> tuple[str, int]:
    """DATE (3 bytes little-endian: day 5 bits, month 4 bits, year) as 'YYYY-MM-DD'."""
    v = int.from_bytes(data[pos:pos + 3], "little")
    return f"{v >> 9:04d}-{(v >> 5) & 15:02d}-{v & 31:02d}", pos + 3


def _old_datetime_text(data: bytes, pos: int) -> tuple[str, int]:
    v = int.from_bytes(data[pos:pos + 8], "little")
    d, t = divmod(v, 1000000)
    return f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d} {t // 10000:02d}:{t // 100 % 100:02d}:{t % 100:02d}", \
        pos + 8


def _old_time_text(data: bytes, pos: int) -> tuple[str, int]:
    v = int.from_bytes(data[pos:pos + 3], "little", signed=True)
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 10000:02d}:{v // 100 % 100:02d}:{v % 100:02d}", pos + 3


def _texted(ct: ColumnType, inner: Callable[[bytes, int], tuple[str, int]]) -> Decoder:
    from_text = ct.from_text

    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        text, end = inner(data, pos)
        return from_text(text.encode()), end

    return dec


def _texted_bytes(ct: ColumnType, inner: Decoder) -> Decoder:
    from_text = ct.from_text

    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        raw, end = inner(data, pos)
        return from_text(raw), end  # type: ignore[arg-type]

    return dec


def _string(length_bytes: int, encoding: str | None, name: str) -> Decoder:
    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        n = int.from_bytes(data[pos:pos + length_bytes], "little")
        start = pos + length_bytes
        raw = data[start:start + n]
        if encoding is None:
            return bytes(raw), start + n
        try:
            return raw.decode(encoding), start + n
        except UnicodeDecodeError:
            raise ValueDecodeError(f"column {name}: bytes that are not valid {encoding}") from None

    return dec


def _encoding(collation: str) -> str:
    charset = collation.split("_", 1)[0]
    return {"utf8mb4": "utf-8", "utf8mb3": "utf-8", "utf8": "utf-8", "latin1": "cp1252", "ascii": "ascii",
            "ucs2": "utf-16-be", "utf16": "utf-16-be", "utf32": "utf-32-be", "cp1250": "cp1250",
            "cp1251": "cp1251", "cp1256": "cp1256", "cp1257": "cp1257", "greek": "iso8859-7",
            "hebrew": "iso8859-8", "latin2": "iso8859-2", "latin5": "iso8859-9", "latin7": "iso8859-13",
            "koi8r": "koi8-r", "koi8u": "koi8-u", "sjis": "shift_jis", "ujis": "euc-jp", "gbk": "gbk",
            "gb2312": "gb2312", "big5": "big5", "euckr": "euc-kr", "cp932": "cp932", "eucjpms": "euc-jp",
            "tis620": "tis-620", "cp850": "cp850", "cp852": "cp852", "cp866": "cp866", "swe7": "ascii",
            }.get(charset, "utf-8")


def _enum(labels: Sequence[str], size: int, name: str) -> Decoder:
    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        index = int.from_bytes(data[pos:pos + size], "little")
        if index == 0:
            return "", pos + size  # MariaDB's "error" value of an invalid enum, shown as ''
        if index > len(labels):
            raise ValueDecodeError(f"column {name}: enum index {index} beyond its {len(labels)} labels")
        return labels[index - 1], pos + size

    return dec


def _set(labels: Sequence[str], size: int) -> Decoder:
    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        mask = int.from_bytes(data[pos:pos + size], "little")
        return ",".join(label for i, label in enumerate(labels) if mask >> i & 1), pos + size

    return dec


def _bit(ct: ColumnType) -> Decoder:
    nbytes = (ct.length + 7) // 8
    from_text = ct.from_text

    def dec(data: bytes, pos: int) -> tuple[Value, int]:
        return from_text(data[pos:pos + nbytes]), pos + nbytes

    return dec


def decoder(raw: tm.RawColumn, ct: ColumnType, name: str) -> Decoder:
    """The decoder of one column of a row image."""
    code, meta, unsigned = raw.code, raw.meta, ct.unsigned
    if code == tm.TINY:
        return _fixed("<B" if unsigned else "<b")
    if code == tm.SHORT:
        return _fixed("<H" if unsigned else "<h")
    if code == tm.INT24:
        return _int24(unsigned)
    if code == tm.LONG:
        return _fixed("<I" if unsigned else "<i")
    if code == tm.LONGLONG:
        return _ubigint_text if unsigned else _fixed("<q")
    if code == tm.YEAR:
        return lambda data, pos: ((data[pos] + 1900) if data[pos] else 0, pos + 1)
    if code == tm.FLOAT:
        return _float32
    if code == tm.DOUBLE:
        return _fixed("<d")
    if code == tm.NEWDECIMAL:
        return _texted(ct, lambda d, p: decimal_text(d, p, meta >> 8, meta & 0xFF))
    if code in (tm.DATE, tm.NEWDATE):
        return _texted(ct, date_text)
    if code == tm.DATETIME2:
        return _texted(ct, lambda d, p: datetime2_text(d, p, meta))
    if code == tm.TIMESTAMP2:
        return _texted(ct, lambda d, p: timestamp2_text(d, p, meta))
    if code == tm.TIME2:
        return _texted(ct, lambda d, p: time2_text(d, p, meta))
    if code == tm.DATETIME:
        return _texted(ct, _old_datetime_text)
    if code == tm.TIME:
        return _texted(ct, _old_time_text)
    if code == tm.TIMESTAMP:
        return _texted(ct, lambda d, p: timestamp2_text(d, p, 0))  # 4 bytes, like TIMESTAMP2 without fraction
    if code == tm.BIT:
        return _bit(ct)
    if code == tm.ENUM:
        return _enum(ct.labels, meta, name)
    if code == tm.SET:
        return _set(ct.labels, meta)
    if code in (tm.VARCHAR, tm.VAR_STRING):
        return _string(1 if meta < 256 else 2, _encoding(ct.collation) if ct.collation else None, name)
    if code == tm.STRING:
        if ct.data_type == "binary":
            return _texted_bytes(ct, _string(1 if meta < 256 else 2, None, name))
        return _string(1 if meta < 256 else 2, _encoding(ct.collation) if ct.collation else None, name)
    if code in (tm.BLOB, tm.TINY_BLOB, tm.MEDIUM_BLOB, tm.LONG_BLOB, tm.JSON, tm.GEOMETRY):
        return _string(meta, _encoding(ct.collation) if ct.collation else None, name)
    raise ValueDecodeError(f"column {name}: type code {code} cannot be decoded")


def decoders(table: tm.TableMap) -> tuple[Decoder, ...]:
    """One decoder per column of ``table``."""
    return tuple(decoder(r, t, n) for r, t, n in zip(table.raw, table.types, table.names, strict=True))


def read_image(data: bytes, pos: int, decs: Sequence[Decoder], present: Sequence[int]) -> tuple[list[Value], int]:
    """One row image: a null bitmap over the present columns, then their values.

    Returns values for every column of the table (a column missing from the image is None; with
    ``binlog_row_image=FULL`` every column is present) and the position after the image.
    """
    nbits = len(present)
    nbytes = (nbits + 7) // 8
    nulls = data[pos:pos + nbytes]
    pos += nbytes
    values: list[Value] = [None] * len(decs)
    for n, col in enumerate(present):
        if nulls[n >> 3] >> (n & 7) & 1:
            continue
        values[col], pos = decs[col](data, pos)
    return values, pos


def present_columns(bitmap: bytes, count: int) -> list[int]:
    """Indexes of the columns set in a columns-present bitmap."""
    return [i for i in range(count) if bitmap[i >> 3] >> (i & 7) & 1]

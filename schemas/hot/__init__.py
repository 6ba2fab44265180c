"""The compiled hot path of the redo codec (issue 13), and the switch that picks it.

``_redo`` (``_redo.c``, built by ``python -m ops.build_hot``; deploy/bootstrap.sh builds it) writes and reads
the Avro binary of a redo entry with a Transaction body straight from and into Ark's objects (TxnChunk,
RowChange): no dict records, no fastavro union resolution per value. Its bytes are the wire format's, proven
identical to fastavro's by tests/unit/test_hot_codec.py; it knows exactly one schema version, so it is used only
while the current redo schema is the one it was written for (:data:`SCHEMA_FINGERPRINT`).

Where it did not build, or with ``ARK_HOT=0`` in the environment, :data:`ACTIVE` is False and Ark encodes and
decodes everything with fastavro (schemas/redo_codec.py), as before: same bytes, more CPU.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

from schemas import registry
from schemas.entries import (
    REDO_SCHEMA,
    UNCHANGED,
    Op,
    PartRef,
    Position,
    RedoEntry,
    RowChange,
    TxnChunk,
    ValuePart,
)

log = logging.getLogger(__name__)

#: The redo schema version ``_redo.c`` implements (redo_entry.v6.avsc, CRC-64-AVRO of its canonical form). v6 only
#: added ``Column.auto_increment``, inside ``TableMeta`` bodies, which always go through fastavro: the Transaction
#: bytes the C code writes and reads are the same as in v5.
SCHEMA_FINGERPRINT = "c98e8b5c0b5aefec"


def _load() -> ModuleType | None:
    if os.environ.get("ARK_HOT", "1") == "0":
        return None
    try:
        from schemas.hot import _redo  # type: ignore[attr-defined]  # noqa: PLC0415 - optional compiled module
    except ImportError:
        return None
    if registry.current(REDO_SCHEMA).fingerprint != SCHEMA_FINGERPRINT:
        # A newer schema than the C code knows: fastavro until _redo.c is taught the new version.
        log.warning("compiled redo codec is for another schema version; using the pure-Python codec")
        return None
    _redo.configure(UNCHANGED, RowChange, PartRef, ValuePart, (Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE))
    return _redo


_module = _load()
#: True when the compiled codec is loaded and in use.
ACTIVE: bool = _module is not None


def encode(entry: RedoEntry) -> bytes | None:
    """The Avro payload of ``entry`` when the compiled codec can write it; None: use fastavro."""
    if _module is None or not isinstance(entry.body, TxnChunk):
        return None
    payload: bytes | None = _module.encode(entry.group, entry.engine, entry.epoch, entry.body)
    return payload


def decode(payload: bytes) -> RedoEntry | None:
    """The entry in ``payload`` (current schema version) when its body is a Transaction; None: use fastavro.

    Raises ValueError for bytes that are not a well-formed entry.
    """
    if _module is None:
        return None
    fields: Any = _module.decode(payload)
    if fields is None:
        return None
    (group, engine, epoch, txn_id, text, key, commit_time_us, chunk_index, last, confirm, first_row, changes,
     part) = fields
    body = TxnChunk(txn_id=txn_id, commit=Position(text, key), commit_time_us=commit_time_us,
                    chunk_index=chunk_index, last=last, changes=changes, first_row=first_row, confirm=confirm,
                    part=part)
    return RedoEntry(group=group, engine=engine, epoch=epoch, body=body)


def self_check() -> str:
    """"" when the compiled codec is active and writes one sample entry as fastavro does; else what is wrong."""
    import io  # noqa: PLC0415 - only for this check

    from fastavro import schemaless_writer  # noqa: PLC0415

    from schemas.entries import to_record  # noqa: PLC0415

    if _module is None:
        return "the compiled module is not loaded"
    entry = RedoEntry("g", "postgresql", 3, TxnChunk(
        "42", Position("0/16B3748", b"\x00\x00\x00\x00\x01\x6b\x37\x48"), 1_700_000_000_000_000, 0, True,
        [RowChange("public.t", Op.UPDATE, [1, None, UNCHANGED, True, 2.5, "é", b"\x00"], [1])], confirm="0/16B3780"))
    buf = io.BytesIO()
    schemaless_writer(buf, registry.current(REDO_SCHEMA).parsed, to_record(entry))
    if encode(entry) != buf.getvalue():
        return "its bytes differ from fastavro's"
    if decode(buf.getvalue()) != entry:
        return "it reads back a different entry"
    return ""

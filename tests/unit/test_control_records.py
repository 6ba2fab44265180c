"""Typed control records: the dataclasses and the committed Avro schema agree, every kind round-trips
through a signed envelope, and v1 records (string args) still read as typed bodies."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from schemas import control, envelope, registry
from schemas.control import KINDS, body_from_wire, to_wire
from tests.support.memory import memory_channel

_AVRO = {"str": "string", "float": "double", "int": "long", "bytes": "bytes",
         "tuple[str, ...]": {"type": "array", "items": "string"}}


def _example(cls: type[Any]) -> Any:
    values = {"str": "x", "float": 1.5, "int": 7, "bytes": b"\x01\x02", "tuple[str, ...]": ("a", "b")}
    return cls(**{f.name: values[str(f.type)] for f in dataclasses.fields(cls)})


def test_the_committed_schema_has_one_record_per_kind_with_the_same_fields() -> None:
    raw = registry.current("control").raw
    body = next(f for f in raw["fields"] if f["name"] == "body")
    records = {r["name"]: r for r in body["type"] if isinstance(r, dict)}
    assert set(records) == {cls.__name__ for cls in KINDS.values()}
    for cls in KINDS.values():
        want = [(f.name, _AVRO[str(f.type)]) for f in dataclasses.fields(cls)]
        assert [(f["name"], f["type"]) for f in records[cls.__name__]["fields"]] == want, cls.__name__


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips_signed(kind: str) -> None:
    body = _example(KINDS[kind])
    store: list[Any] = []
    memory_channel(store).publish(body, "sb1")
    (rec,) = memory_channel(store).poll()
    assert rec.body == body and rec.kind == kind and rec.target == "sb1"
    assert envelope.H_SIGNATURE in dict(store[0][1])


def test_v1_records_are_still_read() -> None:
    v1 = registry.by_fingerprint(next(s.fingerprint for s in registry.all_versions()
                                      if s.name == "control" and s.version == 1))
    assert v1.version == 1
    record = {"group": "g", "kind": "set-delay", "target": "sb1", "args": {"seconds": "30"}, "issued_by": "op",
              "issued_at_us": 1, "request_id": "r"}
    assert body_from_wire(record) == control.SetDelay(30.0)
    renamed = {**record, "kind": "table-quarantined", "args": {"table": "public.t", "request": "r0", "reason": "x"}}
    assert body_from_wire(renamed) == control.TableResyncStarted("public.t", "r0", "x")
    assert body_from_wire({**record, "kind": "from-the-future", "args": {}}) is None


def test_to_wire_names_the_union_branch() -> None:
    name, fields = to_wire(control.RetransmitDone(("a", "b"), "0/1", b"\x00"))
    assert name == "ark.control.RetransmitDone" and fields["request_ids"] == ["a", "b"]
    json.dumps({k: v for k, v in fields.items() if k != "after_key"})

"""Schema evolution rules: each committed version must read the previous one's data, and back.

The check is structural (Avro resolution rules for the changes Ark allows) and is backed by a
round trip through fastavro's own schema resolution in the tests.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import IncompatibleSchema

_PRIMITIVE_PROMOTIONS = {
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"),
}


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return str(schema.get("type"))


def _named(schema: Any) -> str | None:
    return schema.get("name") if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed") \
        else None


def readable(writer: Any, reader: Any, path: str = "", *, new_records: bool = False) -> list[str]:
    """Problems that stop ``reader`` from reading data written with ``writer`` (empty = compatible).

    ``new_records``: a union of the writer may hold a *named record* the reader's union lacks (a new kind of
    entry, such as SchemaChange in redo_entry v5). Avro fails only on a datum of that branch, and an Ark node
    never resolves one: it decodes each entry with the writer's schema, found by fingerprint, and an older
    build refuses an unknown fingerprint ("upgrade Ark on this node"). Every other change must still resolve.
    """
    w, r = _type_name(writer), _type_name(reader)
    if r == "union":
        branches = reader
        wb = writer if w == "union" else [writer]
        problems = []
        for branch in wb:
            if all(readable(branch, rb, path, new_records=new_records) for rb in branches):
                if new_records and _named(branch) and not any(_named(rb) == _named(branch) for rb in branches):
                    continue
                problems.append(f"{path or '<root>'}: writer branch {_type_name(branch)} matches no reader branch")
        return problems
    if w == "union":
        return [p for branch in writer for p in readable(branch, reader, path, new_records=new_records)]
    if w != r:
        if (w, r) in _PRIMITIVE_PROMOTIONS:
            return []
        return [f"{path or '<root>'}: type changed from {w} to {r}"]
    if w == "record":
        if _named(writer) != _named(reader):
            return [f"{path}: record renamed from {_named(writer)} to {_named(reader)}"]
        problems = []
        wfields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            sub = f"{path}.{field['name']}" if path else field["name"]
            if field["name"] in wfields:
                problems += readable(wfields[field["name"]]["type"], field["type"], sub, new_records=new_records)
            elif "default" not in field:
                problems.append(f"{sub}: new field without a default")
        return problems
    if w == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum symbols removed without a default: {sorted(missing)}"]
        return []
    if w == "array":
        return readable(writer["items"], reader["items"], path + "[]", new_records=new_records)
    if w == "map":
        return readable(writer["values"], reader["values"], path + "{}", new_records=new_records)
    if w == "fixed" and writer.get("size") != reader.get("size"):
        return [f"{path}: fixed size changed"]
    return []


def check_pair(old: Any, new: Any, name: str) -> None:
    """Raise IncompatibleSchema unless ``new`` reads ``old`` data (backward) and ``old`` reads ``new`` (forward)."""
    backward = readable(old, new)
    forward = readable(new, old, new_records=True)
    if backward or forward:
        detail = "; ".join([f"new cannot read old: {p}" for p in backward]
                           + [f"old cannot read new: {p}" for p in forward])
        raise IncompatibleSchema(f"schema {name}: {detail}")

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


def readable(writer: Any, reader: Any, path: str = "") -> list[str]:
    """Problems that stop ``reader`` from reading data written with ``writer`` (empty = compatible)."""
    w, r = _type_name(writer), _type_name(reader)
    if r == "union":
        branches = reader
        wb = writer if w == "union" else [writer]
        problems = []
        for branch in wb:
            if all(readable(branch, rb, path) for rb in branches):
                problems.append(f"{path or '<root>'}: writer branch {_type_name(branch)} matches no reader branch")
        return problems
    if w == "union":
        return [p for branch in writer for p in readable(branch, reader, path)]
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
                problems += readable(wfields[field["name"]]["type"], field["type"], sub)
            elif "default" not in field:
                problems.append(f"{sub}: new field without a default")
        return problems
    if w == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum symbols removed without a default: {sorted(missing)}"]
        return []
    if w == "array":
        return readable(writer["items"], reader["items"], path + "[]")
    if w == "map":
        return readable(writer["values"], reader["values"], path + "{}")
    if w == "fixed" and writer.get("size") != reader.get("size"):
        return [f"{path}: fixed size changed"]
    return []


def _without_added_branches(new: Any, old: Any) -> Any:
    """``new`` without the named union branches of its record fields that ``old`` does not have."""
    if not isinstance(new, dict) or new.get("type") != "record" or not isinstance(old, dict):
        return new
    old_fields = {f["name"]: f["type"] for f in old.get("fields", [])}
    fields = []
    for field in new["fields"]:
        kind, was = field["type"], old_fields.get(field["name"])
        if isinstance(kind, list) and isinstance(was, list):
            known = {_named(b) or _type_name(b) for b in was}
            kind = [b for b in kind if (_named(b) or _type_name(b)) in known]
        fields.append({**field, "type": kind})
    return {**new, "fields": fields}


#: Schemas whose unions may gain branches in a new version (a new kind of record). Such a record cannot be
#: read by an older build, which refuses its unknown fingerprint and says to upgrade (schemas/registry.py);
#: every other forward and backward rule still holds.
UNIONS_GROW: frozenset[str] = frozenset({"control"})


def check_pair(old: Any, new: Any, name: str) -> None:
    """Raise IncompatibleSchema unless ``new`` reads ``old`` data (backward) and ``old`` reads ``new`` (forward;
    for :data:`UNIONS_GROW`, except for the branches ``new`` adds)."""
    backward = readable(old, new)
    forward = readable(_without_added_branches(new, old) if name in UNIONS_GROW else new, old)
    if backward or forward:
        detail = "; ".join([f"new cannot read old: {p}" for p in backward]
                           + [f"old cannot read new: {p}" for p in forward])
        raise IncompatibleSchema(f"schema {name}: {detail}")

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


def readable(writer: Any, reader: Any, path: str = "", new_kinds: frozenset[str] = frozenset()) -> list[str]:
    """Problems that stop ``reader`` from reading data written with ``writer`` (empty = compatible).

    A writer's union branch that is one of the records ``new_kinds`` may match no reader branch."""
    w, r = _type_name(writer), _type_name(reader)
    if r == "union":
        branches = reader
        wb = writer if w == "union" else [writer]
        problems = []
        for branch in wb:
            if all(readable(branch, rb, path, new_kinds) for rb in branches):
                if _named(branch) in new_kinds:
                    continue  # a new kind of entry: see check_pair
                problems.append(f"{path or '<root>'}: writer branch {_type_name(branch)} matches no reader branch")
        return problems
    if w == "union":
        return [p for branch in writer for p in readable(branch, reader, path, new_kinds)]
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
                problems += readable(wfields[field["name"]]["type"], field["type"], sub, new_kinds)
            elif "default" not in field:
                problems.append(f"{sub}: new field without a default")
        return problems
    if w == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum symbols removed without a default: {sorted(missing)}"]
        return []
    if w == "array":
        return readable(writer["items"], reader["items"], path + "[]", new_kinds)
    if w == "map":
        return readable(writer["values"], reader["values"], path + "{}", new_kinds)
    if w == "fixed" and writer.get("size") != reader.get("size"):
        return [f"{path}: fixed size changed"]
    return []


def _records(schema: Any) -> set[str]:
    """Full names of every named record inside ``schema``."""
    if isinstance(schema, list):
        return set().union(*(_records(s) for s in schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = {schema["name"]} if schema.get("type") == "record" else set()
    for f in schema.get("fields", ()):
        found |= _records(f["type"])
    for key in ("items", "values"):
        if key in schema:
            found |= _records(schema[key])
    return found


def check_pair(old: Any, new: Any, name: str) -> None:
    """Raise IncompatibleSchema unless ``new`` reads ``old`` data (backward) and ``old`` reads ``new`` (forward).

    One exception to forward: a union may gain a branch that is a new record (a new kind of entry, e.g. the
    redo entry's SequenceValues). An older build cannot read that kind, and never tries: it does not know the
    new schema's fingerprint, and says to upgrade the node (schemas/registry.py)."""
    backward = readable(old, new)
    forward = readable(new, old, new_kinds=frozenset(_records(new) - _records(old)))
    if backward or forward:
        detail = "; ".join([f"new cannot read old: {p}" for p in backward]
                           + [f"old cannot read new: {p}" for p in forward])
        raise IncompatibleSchema(f"schema {name}: {detail}")

"""From a message of Ark's DDL hook to a :class:`SchemaChange`: what a standby runs to follow the DDL.

Pure (no connection): the capture hands in the message's payload, the facts that were in force before
it (:class:`Before`), its scope and its publications. The steps are generated from catalog facts, never
from the user's statement text (which may hold several statements, or DML): every name is
schema-qualified, and every step can run twice without harm (``IF NOT EXISTS``, ``IF EXISTS``, or a
guard), because a standby that restarts re-applies a transaction from its start.

What is followed (README, "DDL on the primary"):

* tables in scope: their shape (``table`` steps; columns, NOT NULL, key and renames by attnum are the
  standby's :mod:`consumers.postgresql.ddl`), table renames and moves between schemas, defaults,
  identity columns (created ``BY DEFAULT`` on the standby, so the applier can write the primary's
  values), stored generated columns, check/unique/exclusion/foreign-key constraints, secondary
  indexes, triggers, partition attach/detach and partitioned parents;
* types (enum incl. ``ADD VALUE`` and ``RENAME VALUE``, domain, composite, range) in scope or used by a
  table in scope; sequences; views and functions in scope; schemas; extensions;
* drops of all of these; ``DROP TABLE`` and ``DROP SCHEMA`` only on standbys with ``follow_drop``;
* resyncs: a table the hook could not describe, a rewrite whose new values are not in the log (a
  volatile default, a type change with ``USING``), rows written before a table was published.

Foreign keys, views, functions and triggers are ``optional-sql``: a standby that cannot create one (it
references an object that is not replicated) logs a warning and goes on. Everything else that fails
stops the standby, naming the object and the fix.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.postgresql.shapes import Facts, qualified_name, rel_from_facts
from schemas.entries import Position, SchemaChange, SchemaStep, TableMeta

#: Facts larger than this (JSON) are left out of the entry (its steps and shapes still travel).
MAX_FACTS_CHARS = 256 * 1024
#: Rewrite reasons (PostgreSQL's AT_REWRITE_* flags) whose new values the logical log does not carry.
REWRITE_DEFAULT_VAL = 2
REWRITE_COLUMN = 4


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal, whatever standard_conforming_strings is."""
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def guarded(condition: str, statement: str) -> str:
    """``statement`` run only when ``condition`` (SQL) holds, as one idempotent DO block."""
    tag = "ark"
    while f"${tag}$" in statement or f"${tag}$" in condition:
        tag += "_"
    return f"DO ${tag}$ BEGIN IF {condition} THEN EXECUTE {quote_literal(statement)}; END IF; END ${tag}$"


@dataclass
class Scope:
    """What this capture follows: ``primary.tables`` patterns and its publications."""

    patterns: Sequence[str]
    publications: frozenset[str]

    def matches(self, qualified: str) -> bool:
        """True when ``schema.name`` (unquoted) matches a pattern."""
        return any(fnmatch.fnmatchcase(qualified, p) for p in self.patterns)

    def schema_in(self, schema: str) -> bool:
        """True when a pattern can name objects of ``schema``."""
        return any(fnmatch.fnmatchcase(schema, p.rpartition(".")[0] or p) for p in self.patterns)

    def published(self, facts: Facts) -> bool:
        """True when the table is in one of this capture's publications."""
        return bool(self.publications & set(facts.get("published") or ()))


#: Facts of an object as they were before the message (None: unknown).
Before = Callable[[int], Facts | None]


@dataclass
class _Out:
    steps: list[SchemaStep] = field(default_factory=list)
    tables: list[TableMeta] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def add(self, action: str, obj: str, sql: str = "", detail: str = "") -> None:
        step = SchemaStep(action, obj, sql, detail)
        key = repr(step)
        if key not in self.done:
            self.done.add(key)
            self.steps.append(step)


def build_change(payload: dict[str, Any], *, commit: Position, seq: int, scope: Scope, before: Before,
                 type_names: dict[int, str]) -> tuple[SchemaChange, list[str]]:
    """The SchemaChange of one hook message, and notes for the capture's log (what was not followed)."""
    out = _Out()
    event = str(payload.get("event") or "")
    if event == "ddl":
        _ddl(payload, out, scope, before, type_names, commit.text)
    elif event == "drop":
        _drops(payload, out, scope, before)
    elif event == "rewrite":
        _rewrite(payload, out, scope)
    elif event == "failed":
        for t in payload.get("tables") or ():
            name = t.get("name")
            if name and scope.matches(_unquote(name)):
                out.add("resync-table", _unquote(name), detail=f"Ark's DDL hook could not describe it "
                        f"({payload.get('tag')}: {payload.get('error')})")
        if not payload.get("tables"):
            out.notes.append(f"Ark's DDL hook could not record a {payload.get('tag')} ({payload.get('error')}): "
                             "no table named; nothing to resync")
    elif event == "resync":
        for t in payload.get("tables") or ():
            if t.get("name") and scope.matches(str(t["name"])):
                out.add("resync-table", str(t["name"]), detail=str(payload.get("reason") or "requested"))
    facts = json.dumps(payload, sort_keys=True, default=str)
    change = SchemaChange(commit=commit, seq=seq, tag=str(payload.get("tag") or ("ARK " + event.upper())),
                          steps=tuple(out.steps), tables=tuple(out.tables),
                          statement=str(payload.get("statement") or ""), search_path=str(payload.get("search_path")
                                                                                          or ""),
                          facts=facts if len(facts) <= MAX_FACTS_CHARS else "")
    return change, out.notes


def _unquote(identity: str) -> str:
    """``"Sales"."Order"`` → ``Sales.Order`` (object identities as PostgreSQL prints them)."""
    parts, cur, quoted, i = [], "", False, 0
    while i < len(identity):
        ch = identity[i]
        if ch == '"':
            if quoted and identity[i + 1:i + 2] == '"':
                cur += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return ".".join(parts)


# -- CREATE / ALTER -----------------------------------------------------------------------------------------
def _ddl(payload: dict[str, Any], out: _Out, scope: Scope, before: Before, type_names: dict[int, str],
         position: str) -> None:
    objects: dict[str, Facts] = {str(k): v for k, v in (payload.get("objects") or {}).items() if v}
    identity_seqs = {(o["owned_by"]["table"], o["owned_by"]["column"]): o["qualified"] for o in objects.values()
                     if o.get("kind") == "sequence" and o.get("identity") and o.get("owned_by")}
    resync = {str(a.get("table")): a for a in payload.get("policy") or () if a.get("resync")}
    created = {str(c.get("oid")) for c in payload.get("commands") or () if str(c.get("tag")).startswith("CREATE TABLE")
               or str(c.get("tag")) == "SELECT INTO"}
    for problem in (a for a in payload.get("policy") or () if a.get("error")):
        out.notes.append(f"the keyless policy could not be applied to {problem.get('table')} in the DDL's "
                         f"transaction ({problem.get('error')}): the capture applies it within seconds")
    seen: set[str] = set()
    for cmd in payload.get("commands") or ():
        oid = str(cmd.get("oid"))
        facts = objects.get(oid)
        if facts is None:
            facts = next((f for f in objects.values() if f.get("kind") == "table" and _mentions(f, oid)), None)
        if facts is None:
            if str(cmd.get("type")) not in ("publication", "event trigger"):
                out.notes.append(f"{cmd.get('tag')} {cmd.get('identity')}: not followed on the standbys")
            continue
        key = str(facts.get("oid"))
        if key in seen and facts.get("kind") != "type":
            continue
        seen.add(key)
        kind = facts.get("kind")
        if kind == "table":
            _table(facts, before(int(facts["oid"])), out, scope, type_names, position, identity_seqs, resync,
                   created=key in created)
        elif kind == "type":
            _type(facts, before(int(facts["oid"])), out, scope, str(cmd.get("tag")))
        elif kind == "sequence":
            _sequence(facts, before(int(facts["oid"])), out, scope)
        elif kind == "schema":
            if scope.schema_in(str(facts["name"])):
                out.add("sql", str(facts["name"]), f"CREATE SCHEMA IF NOT EXISTS {facts['qualified']}")
        elif kind == "extension":
            _extension(facts, out, str(cmd.get("tag")))
        elif kind in ("view", "function"):
            if scope.matches(_unquote(str(facts["qualified"]))):
                out.add("optional-sql", _unquote(str(facts["qualified"])), str(facts["create"]),
                        f"a {kind} the standby cannot create (it uses something that is not replicated there) "
                        "is left out; rows keep applying")
        elif kind == "trigger" and scope.matches(_unquote(str(facts["table"]))):
            create = re.sub(r"^CREATE\s+(CONSTRAINT\s+)?TRIGGER", "CREATE OR REPLACE TRIGGER", str(facts["create"]))
            out.add("optional-sql", f"{facts['name']} on {_unquote(str(facts['table']))}", create,
                    "triggers do not fire while the standby applies; one it cannot create is left out")


def _mentions(table: Facts, oid: str) -> bool:
    """Whether an index or constraint of ``oid`` belongs to this table's facts."""
    return any(str(i.get("oid")) == oid for i in (table.get("indexes") or ())) or \
        any(str(c.get("oid")) == oid for c in (table.get("constraints") or ()))


def _extension(facts: Facts, out: _Out, tag: str) -> None:
    name = quote_ident(str(facts["name"]))
    if tag.startswith("CREATE"):
        out.add("sql", f"extension {facts['name']}",
                f"CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA {quote_ident(str(facts['schema']))}")
    else:
        out.add("sql", f"extension {facts['name']}",
                f"ALTER EXTENSION {name} UPDATE TO {quote_literal(str(facts['version']))}")


def _create_type_sql(t: Facts) -> str | None:
    """The CREATE statement of a type, from its facts (None for a kind Ark does not create)."""
    q, typtype = str(t["qualified"]), t.get("typtype")
    if typtype == "e":
        labels = ", ".join(quote_literal(str(label)) for _oid, label in t.get("labels") or ())
        return f"CREATE TYPE {q} AS ENUM ({labels})"
    if typtype == "d":
        sql = f"CREATE DOMAIN {q} AS {t['base']}"
        if t.get("default") is not None:
            sql += f" DEFAULT {t['default']}"
        if t.get("not_null"):
            sql += " NOT NULL"
        for check in t.get("checks") or ():
            sql += f" CONSTRAINT {quote_ident(str(check['name']))} {check['def']}"
        return sql
    if typtype == "c" and not t.get("table_rowtype"):
        attrs = ", ".join(f"{quote_ident(str(a['name']))} {a['type']}" for a in t.get("attributes") or ())
        return f"CREATE TYPE {q} AS ({attrs})"
    if typtype == "r" and t.get("range"):
        r = t["range"]
        opts = [f"SUBTYPE = {r['subtype']}"]
        if r.get("subdiff"):
            opts.append(f"SUBTYPE_DIFF = {r['subdiff']}")
        if r.get("multirange"):
            opts.append(f"MULTIRANGE_TYPE_NAME = {r['multirange']}")
        return f"CREATE TYPE {q} AS RANGE ({', '.join(opts)})"
    return None


def _ensure_type(t: Facts, out: _Out) -> None:
    """Create the type on the standby unless it exists there."""
    create = _create_type_sql(t)
    if create is not None:
        q = str(t["qualified"])
        out.add("sql", f"type {_unquote(q)}", guarded(f"to_regtype({quote_literal(q)}) IS NULL", create))


def _type(t: Facts, prev: Facts | None, out: _Out, scope: Scope, tag: str) -> None:
    q = str(t["qualified"])
    if t.get("table_rowtype") or not scope.matches(_unquote(q)):
        return
    obj = f"type {_unquote(q)}"
    if prev is not None and prev.get("qualified") != q:
        old = str(prev["qualified"])
        if prev.get("schema") != t.get("schema"):
            out.add("sql", obj, guarded(f"to_regtype({quote_literal(old)}) IS NOT NULL",
                                        f"ALTER TYPE {old} SET SCHEMA {quote_ident(str(t['schema']))}"))
            old = f"{quote_ident(str(t['schema']))}.{quote_ident(str(prev['name']))}"
        if prev.get("name") != t.get("name"):
            out.add("sql", obj, guarded(f"to_regtype({quote_literal(old)}) IS NOT NULL",
                                        f"ALTER TYPE {old} RENAME TO {quote_ident(str(t['name']))}"))
    _ensure_type(t, out)
    if t.get("typtype") == "e" and not tag.startswith("CREATE"):
        _enum_labels(t, prev, out, obj)
    elif t.get("typtype") == "d" and prev is not None:
        _domain(t, prev, out, obj)
    elif t.get("typtype") == "c" and prev is not None:
        _composite(t, prev, out, obj)


def _enum_labels(t: Facts, prev: Facts | None, out: _Out, obj: str) -> None:
    """RENAME VALUE for labels whose oid kept and name changed; ADD VALUE, in place, for new ones."""
    q = str(t["qualified"])
    labels = [(str(o), str(label)) for o, label in t.get("labels") or ()]
    old = {str(o): str(label) for o, label in (prev.get("labels") or ())} if prev else {}
    for oid, label in labels:
        if oid in old and old[oid] != label:
            out.add("sql", obj, guarded(
                f"EXISTS (SELECT 1 FROM pg_enum WHERE enumtypid = {quote_literal(q)}::regtype "
                f"AND enumlabel = {quote_literal(old[oid])})",
                f"ALTER TYPE {q} RENAME VALUE {quote_literal(old[oid])} TO {quote_literal(label)}"))
    for i, (oid, label) in enumerate(labels):
        if prev is not None and oid in old:
            continue
        where = (f" AFTER {quote_literal(labels[i - 1][1])}" if i > 0
                 else f" BEFORE {quote_literal(labels[1][1])}" if len(labels) > 1 else "")
        out.add("sql", obj, f"ALTER TYPE {q} ADD VALUE IF NOT EXISTS {quote_literal(label)}{where}")


def _domain(t: Facts, prev: Facts, out: _Out, obj: str) -> None:
    q = str(t["qualified"])
    if t.get("default") != prev.get("default"):
        out.add("sql", obj, f"ALTER DOMAIN {q} SET DEFAULT {t['default']}" if t.get("default") is not None
                else f"ALTER DOMAIN {q} DROP DEFAULT")
    if bool(t.get("not_null")) != bool(prev.get("not_null")):
        out.add("sql", obj, f"ALTER DOMAIN {q} {'SET' if t.get('not_null') else 'DROP'} NOT NULL")
    old = {str(c["oid"]): c for c in prev.get("checks") or ()}
    new = {str(c["oid"]): c for c in t.get("checks") or ()}
    for oid, c in new.items():
        name = quote_ident(str(c["name"]))
        if oid in old and old[oid]["name"] != c["name"]:
            out.add("sql", obj, f"ALTER DOMAIN {q} RENAME CONSTRAINT {quote_ident(str(old[oid]['name']))} TO {name}")
        elif oid not in old:
            out.add("sql", obj, guarded(
                f"NOT EXISTS (SELECT 1 FROM pg_constraint WHERE contypid = {quote_literal(q)}::regtype "
                f"AND conname = {quote_literal(str(c['name']))})",
                f"ALTER DOMAIN {q} ADD CONSTRAINT {name} {c['def']}"))
    for oid, c in old.items():
        if oid not in new:
            out.add("sql", obj, f"ALTER DOMAIN {q} DROP CONSTRAINT IF EXISTS {quote_ident(str(c['name']))}")


def _composite(t: Facts, prev: Facts, out: _Out, obj: str) -> None:
    q = str(t["qualified"])
    old = {int(a["attnum"]): a for a in prev.get("attributes") or ()}
    new = {int(a["attnum"]): a for a in t.get("attributes") or ()}
    for num, a in new.items():
        name = quote_ident(str(a["name"]))
        was = old.get(num)
        if was is None:
            out.add("sql", obj, f"ALTER TYPE {q} ADD ATTRIBUTE {name} {a['type']}")
            continue
        if was["name"] != a["name"]:
            out.add("sql", obj, f"ALTER TYPE {q} RENAME ATTRIBUTE {quote_ident(str(was['name']))} TO {name}")
        if was["type"] != a["type"]:
            out.add("sql", obj, f"ALTER TYPE {q} ALTER ATTRIBUTE {name} TYPE {a['type']}")
    for num, a in old.items():
        if num not in new:
            out.add("sql", obj, f"ALTER TYPE {q} DROP ATTRIBUTE IF EXISTS {quote_ident(str(a['name']))}")


def _sequence_options(s: Facts) -> str:
    return (f"AS {s['type']} INCREMENT BY {s['increment']} MINVALUE {s['min']} MAXVALUE {s['max']} "
            f"START WITH {s['start']} CACHE {s['cache']} {'CYCLE' if s.get('cycle') else 'NO CYCLE'}")


def _sequence(s: Facts, prev: Facts | None, out: _Out, scope: Scope) -> None:
    if s.get("identity"):
        return  # created with its identity column (see _table)
    q = str(s["qualified"])
    owner = s.get("owned_by") or {}
    if not scope.matches(_unquote(q)) and not (owner and scope.matches(_unquote(str(owner.get("table"))))):
        return
    obj = f"sequence {_unquote(q)}"
    if prev is not None and prev.get("qualified") != q:
        old = str(prev["qualified"])
        if prev.get("schema") != s.get("schema"):
            out.add("sql", obj, f"ALTER SEQUENCE IF EXISTS {old} SET SCHEMA {quote_ident(str(s['schema']))}")
            old = f"{quote_ident(str(s['schema']))}.{quote_ident(str(prev['name']))}"
        if prev.get("name") != s.get("name"):
            out.add("sql", obj, f"ALTER SEQUENCE IF EXISTS {old} RENAME TO {quote_ident(str(s['name']))}")
    out.add("sql", obj, f"CREATE SEQUENCE IF NOT EXISTS {q} {_sequence_options(s)}")
    if prev is not None:
        out.add("sql", obj, f"ALTER SEQUENCE {q} {_sequence_options(s)}")


def _table(t: Facts, prev: Facts | None, out: _Out, scope: Scope, type_names: dict[int, str], position: str,
           identity_seqs: dict[tuple[str, str], str], resync: dict[str, Any], *, created: bool = False) -> None:
    name, q = qualified_name(t), str(t["qualified"])
    if t.get("unknown"):
        return
    if prev is not None and not prev.get("unknown") and prev.get("qualified") != q:
        old_name = qualified_name(prev)
        if scope.matches(old_name) and scope.matches(name):
            out.add("rename-table", old_name, detail=name)
        elif scope.matches(old_name):
            out.notes.append(f"table {old_name} was renamed to {name}, which primary.tables does not name: the "
                             "standbys keep it under its old name and it is no longer replicated")
        prev = prev if scope.matches(old_name) else None
    if not scope.matches(name):
        return
    if t.get("relkind") == "p":
        _partitioned(t, prev, out)
        _table_objects(t, prev, out, identity_seqs)
        return
    if t.get("relkind") != "r" or t.get("persistence") != "p":
        return
    if not scope.published(t):
        return  # keyless under 'skip', or not added yet: nothing of it is replicated
    for used in t.get("types") or ():
        _ensure_type(used, out)
    if resync.get(q) is not None:
        # first: the standby then takes the new shape from the copy, not by altering rows it is about to replace
        # (a key added back over rows the primary deduplicated while only their inserts were published)
        out.add("resync-table", name, detail="rows were written to it before it was published, or while only its "
                                             "inserts were (created with rows, renamed into scope, given a key back)")
    if created:  # every column in its place (generated ones included), as on the primary
        out.add("sql", name, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(str(t['schema']))}")
        out.add("sql", name, _create_table_sql(t, identity_seqs))
    meta = rel_from_facts(t, type_names, position).meta
    out.tables.append(meta)
    out.add("table", name)
    _table_objects(t, prev, out, identity_seqs)


def _create_table_sql(t: Facts, identity_seqs: dict[tuple[str, str], str]) -> str:
    """CREATE TABLE of a new table: its columns in attnum order, generated and identity columns, NOT NULL, and its
    primary key by name. Defaults, other constraints and indexes are steps of their own (:func:`_table_objects`)."""
    q = str(t["qualified"])
    cols = []
    for c in t.get("ddl") or ():
        col = f"{quote_ident(str(c['name']))} {c['type']}"
        if c.get("collation"):
            col += f" COLLATE {c['collation']}"
        if c.get("generated") is not None:
            col += f" GENERATED ALWAYS AS ({c['generated']}) STORED"
        elif c.get("identity"):
            seq = identity_seqs.get((q, str(c["name"])))
            col += " GENERATED BY DEFAULT AS IDENTITY" + (f" (SEQUENCE NAME {seq})" if seq else "")
        if c.get("not_null"):
            col += " NOT NULL"
        cols.append(col)
    for con in t.get("constraints") or ():
        if con.get("type") == "p":
            cols.append(f"CONSTRAINT {quote_ident(str(con['name']))} {con['def']}")
    return f"CREATE TABLE IF NOT EXISTS {q} ({', '.join(cols)})"


def _by_attnum(facts: Facts | None) -> dict[int, Facts]:
    return {int(c["attnum"]): c for c in (facts or {}).get("ddl") or ()} if facts else {}


def _table_objects(t: Facts, prev: Facts | None, out: _Out, identity_seqs: dict[tuple[str, str], str]) -> None:
    """Defaults, identity and generated columns, constraints, indexes and partition membership."""
    name, q = qualified_name(t), str(t["qualified"])
    old_cols, new_cols = _by_attnum(prev), _by_attnum(t)
    for num, c in new_cols.items():
        col = quote_ident(str(c["name"]))
        was = old_cols.get(num)
        if c.get("generated") is not None:
            if was is None:
                out.add("sql", name, f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS {col} {c['type']} "
                                     f"GENERATED ALWAYS AS ({c['generated']}) STORED")
            continue
        if c.get("identity") and not (was or {}).get("identity"):
            seq = identity_seqs.get((q, str(c["name"])))
            options = f" (SEQUENCE NAME {seq})" if seq else ""
            out.add("sql", name, guarded(
                f"NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {quote_literal(q)}::regclass "
                f"AND attname = {quote_literal(str(c['name']))} AND attidentity <> '')",
                f"ALTER TABLE {q} ALTER COLUMN {col} ADD GENERATED BY DEFAULT AS IDENTITY{options}"))
        elif not c.get("identity") and (was or {}).get("identity"):
            out.add("sql", name, f"ALTER TABLE {q} ALTER COLUMN {col} DROP IDENTITY IF EXISTS")
        default = c.get("default")
        if default != (was or {}).get("default") and not c.get("identity"):
            if default is not None:
                out.add("sql", name, f"ALTER TABLE {q} ALTER COLUMN {col} SET DEFAULT {default}")
            elif was is not None:
                out.add("sql", name, f"ALTER TABLE {q} ALTER COLUMN {col} DROP DEFAULT")
    old_cons = {str(c["oid"]): c for c in (prev or {}).get("constraints") or ()}
    for c in t.get("constraints") or ():
        if c.get("type") in ("p", "t") or not c.get("local", True):
            continue  # the key is the shape's; constraint triggers and inherited constraints come with others
        cname = quote_ident(str(c["name"]))
        was = old_cons.get(str(c["oid"]))
        if was is not None:
            if was["name"] != c["name"]:
                out.add("sql", name, f"ALTER TABLE {q} RENAME CONSTRAINT {quote_ident(str(was['name']))} TO {cname}")
            if c.get("validated") and not was.get("validated"):
                out.add("sql", name, f"ALTER TABLE {q} VALIDATE CONSTRAINT {cname}")
            continue
        add = guarded(f"NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {quote_literal(q)}::regclass "
                      f"AND conname = {quote_literal(str(c['name']))})",
                      f"ALTER TABLE {q} ADD CONSTRAINT {cname} {c['def']}")
        if c.get("type") == "f":
            out.add("optional-sql", name, add, f"a foreign key to {c.get('ref')}, which may not be replicated")
        else:
            out.add("sql", name, add)
    old_idx = {str(i["oid"]): i for i in (prev or {}).get("indexes") or ()}
    for i in t.get("indexes") or ():
        if i.get("constraint") or not i.get("valid"):
            continue  # an index of a key or constraint comes with it; an invalid one is still being built
        was = old_idx.get(str(i["oid"]))
        if was is not None:
            if was["name"] != i["name"]:
                old = f"{quote_ident(str(t['schema']))}.{quote_ident(str(was['name']))}"
                out.add("sql", name, f"ALTER INDEX IF EXISTS {old} RENAME TO {quote_ident(str(i['name']))}")
            continue
        out.add("sql", name, re.sub(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX IF NOT EXISTS ", str(i["def"])))
    parent, bound = t.get("parent"), t.get("bound")
    old_parent = (prev or {}).get("parent")
    if parent and bound and parent != old_parent:
        out.add("optional-sql", name, guarded(
            f"EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass({quote_literal(str(parent))}) AND relkind = 'p') "
            f"AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = {quote_literal(q)}::regclass)",
            f"ALTER TABLE {parent} ATTACH PARTITION {q} {bound}"),
            f"the partitioned table {parent} may not be on the standby; the partition's rows apply either way")
    elif old_parent and not parent:
        out.add("optional-sql", name, guarded(
            f"EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = {quote_literal(q)}::regclass)",
            f"ALTER TABLE {old_parent} DETACH PARTITION {q}"), "the partition was detached on the primary")


def _partitioned(t: Facts, prev: Facts | None, out: _Out) -> None:
    """A partitioned table holds no rows itself (its partitions are published): create it on the standby."""
    q = str(t["qualified"])
    if prev is not None or not t.get("partkey"):
        return
    cols = [f"{quote_ident(str(c['name']))} {c['type']}{' NOT NULL' if c.get('not_null') else ''}"
            for c in t.get("ddl") or () if c.get("generated") is None]
    for used in t.get("types") or ():
        _ensure_type(used, out)
    schema = quote_ident(str(t["schema"]))
    out.add("sql", qualified_name(t), f"CREATE SCHEMA IF NOT EXISTS {schema}")
    out.add("sql", qualified_name(t), f"CREATE TABLE IF NOT EXISTS {q} ({', '.join(cols)}) PARTITION BY {t['partkey']}")


# -- DROP -----------------------------------------------------------------------------------------------------
def _drops(payload: dict[str, Any], out: _Out, scope: Scope, before: Before) -> None:
    for d in payload.get("dropped") or ():
        kind, identity = str(d.get("type")), str(d.get("identity"))
        address = [str(a) for a in d.get("address") or ()]
        if kind == "table column" and d.get("original") and len(address) == 3:
            table = f"{address[0]}.{address[1]}"
            prev = before(int(d["oid"])) if d.get("oid") is not None else None
            generated = any(c.get("name") == address[2] and c.get("generated") is not None
                            for c in (prev or {}).get("ddl") or ())
            if generated and scope.matches(table):
                out.add("sql", table, f"ALTER TABLE {quote_ident(address[0])}.{quote_ident(address[1])} "
                                      f"DROP COLUMN IF EXISTS {quote_ident(address[2])}")
            continue  # a plain column goes with the table's new shape
        if not d.get("original"):
            continue  # dropped with something else: the standby's own dependencies drop it too
        plain = _unquote(identity)
        if kind == "table" and scope.matches(plain):
            out.add("drop-table", plain, f"DROP TABLE IF EXISTS {identity}")
        elif kind == "schema" and scope.schema_in(plain):
            out.add("drop-schema", plain, f"DROP SCHEMA IF EXISTS {identity}")
        elif kind == "table constraint" and len(address) == 3 and scope.matches(f"{address[0]}.{address[1]}"):
            out.add("sql", f"{address[0]}.{address[1]}", f"ALTER TABLE IF EXISTS {quote_ident(address[0])}."
                    f"{quote_ident(address[1])} DROP CONSTRAINT IF EXISTS {quote_ident(address[2])}")
        elif kind == "trigger" and len(address) == 3 and scope.matches(f"{address[0]}.{address[1]}"):
            out.add("optional-sql", f"{address[2]} on {address[0]}.{address[1]}",
                    f"DROP TRIGGER IF EXISTS {quote_ident(address[2])} ON "
                    f"{quote_ident(address[0])}.{quote_ident(address[1])}", "the trigger may not be on the standby")
        elif kind == "index" and scope.schema_in(str(d.get("schema"))):
            out.add("sql", plain, f"DROP INDEX IF EXISTS {identity}")
        elif kind in ("type", "domain") and scope.matches(plain):
            out.add("sql", plain, f"DROP {kind.upper()} IF EXISTS {identity}")
        elif kind == "sequence" and scope.matches(plain):
            out.add("sql", plain, f"DROP SEQUENCE IF EXISTS {identity}")
        elif kind in ("view", "function", "procedure") and scope.matches(_unquote(identity.split("(")[0])):
            out.add("optional-sql", plain, f"DROP {kind.upper()} IF EXISTS {identity}",
                    f"the {kind} may not be on the standby")
        elif kind == "extension":
            out.add("sql", f"extension {identity}", f"DROP EXTENSION IF EXISTS {identity}")


def _rewrite(payload: dict[str, Any], out: _Out, scope: Scope) -> None:
    name = payload.get("name")
    reason = int(payload.get("reason") or 0)
    if not name or not scope.matches(_unquote(str(name))):
        return
    statement = str(payload.get("statement") or "").upper()
    if reason & REWRITE_DEFAULT_VAL:
        why = "a column was added with a default computed row by row (volatile): its values are not in the log"
    elif reason & REWRITE_COLUMN and re.search(r"\bUSING\b", statement):
        why = "a column changed type with a USING expression: the converted values are not in the log"
    else:
        return
    out.add("resync-table", _unquote(str(name)), detail=f"{payload.get('tag')}: {why}")

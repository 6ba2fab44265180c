"""The PostgreSQL capture's side of DDL in the stream, without a server: facts → shapes, hook messages → steps."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from producers.postgresql.catalog import ColumnDetails
from producers.postgresql.ddl_steps import Scope, _unquote, build_change, guarded
from producers.postgresql.hooks import pattern_regex
from producers.postgresql.relations import build_relation
from producers.postgresql.shapes import details_from_facts, rel_from_facts, relation_from_facts
from schemas.entries import Position

COMMIT = Position("0/16B3748", (0x16B3748).to_bytes(8, "big"))
SCOPE = Scope(("public.*",), frozenset({"ark_g", "ark_g_inserts"}))


def _col(attnum: int, name: str, typoid: int = 23, typ: str = "integer", **kw: Any) -> dict[str, Any]:
    return {"attnum": attnum, "name": name, "typoid": typoid, "typmod": -1, "type": typ, "not_null": False,
            "generated": False, "default": None, "missing": None, **kw}


def _ddl(attnum: int, name: str, typ: str = "integer", **kw: Any) -> dict[str, Any]:
    return {"attnum": attnum, "name": name, "type": typ, "not_null": False, "identity": "", "default": None,
            "generated": None, "collation": None, "usertype": None, **kw}


def table_facts(**over: Any) -> dict[str, Any]:
    """Facts of ``public.items (id int PRIMARY KEY, a text, n int)`` as the hook records them."""
    facts: dict[str, Any] = {
        "v": 1, "kind": "table", "oid": 1000, "schema": "public", "name": "items", "qualified": "public.items",
        "relkind": "r", "replident": "d", "persistence": "p",
        "columns": [_col(1, "id", not_null=True), _col(2, "a", 25, "text"), _col(3, "n")],
        "ddl": [_ddl(1, "id", not_null=True), _ddl(2, "a", "text"), _ddl(3, "n")],
        "indexes": [{"oid": 1001, "name": "items_pkey", "def": "CREATE UNIQUE INDEX items_pkey ON public.items USING "
                     "btree (id)", "primary": True, "unique": True, "valid": True, "replident": False, "keys": [1],
                     "partial": False, "expr": False, "constraint": "items_pkey"}],
        "constraints": [{"oid": 1002, "name": "items_pkey", "type": "p", "def": "PRIMARY KEY (id)", "validated": True,
                         "local": True, "ref": None}],
        "partkey": None, "bound": None, "parent": None, "published": ["ark_g"], "types": [],
    }
    facts.update(over)
    return facts


def _change(payload: dict[str, Any], before: dict[int, dict[str, Any]] | None = None, scope: Scope = SCOPE):
    change, notes = build_change(payload, commit=COMMIT, seq=0, scope=scope, before=lambda oid: (before or {}).get(oid),
                                 type_names={})
    return change, notes


def _ddl_payload(tag: str, facts: dict[str, Any], *extra: tuple[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    objects = {str(facts["oid"]): facts, **{str(f["oid"]): f for _t, f in extra}}
    commands = [{"tag": tag, "type": "table", "identity": facts.get("qualified"), "oid": facts["oid"]}]
    commands += [{"tag": t, "type": f["kind"], "identity": f.get("qualified"), "oid": f["oid"]} for t, f in extra]
    return {"v": 1, "event": "ddl", "tag": tag, "statement": "…", "commands": commands, "objects": objects, **kw}


# -- facts → the same shape as the catalog path ---------------------------------------------------------------
def test_a_shape_from_facts_hashes_like_the_catalog_path() -> None:
    facts = table_facts()
    from_facts = rel_from_facts(facts, {}, "0/1").meta
    catalog = ColumnDetails({"id": True, "a": False, "n": False}, {"id": "integer", "a": "text", "n": "integer"},
                            ("id",), attnums={"id": 1, "a": 2, "n": 3})
    from_catalog = build_relation(relation_from_facts(facts), catalog, {}, "0/1").meta
    assert from_facts == from_catalog
    assert [(c.name, c.column_id, c.key_position) for c in from_facts.columns] == [("id", 1, 1), ("a", 2, 0),
                                                                                 ("n", 3, 0)]


def test_key_rules_follow_the_replica_identity() -> None:
    unique = {"oid": 1003, "name": "items_n", "def": "", "primary": False, "unique": True, "valid": True,
              "replident": True, "keys": [3], "partial": False, "expr": False, "constraint": None}
    no_pk = table_facts(indexes=[], constraints=[])
    assert relation_from_facts(no_pk).columns[0].flags == 0
    assert rel_from_facts(no_pk, {}, "").meta.identity == "none"  # keyless, not FULL: insert-only or skipped
    full = table_facts(indexes=[], constraints=[], replident="f")
    assert rel_from_facts(full, {}, "").meta.identity == "full"
    cols = copy.deepcopy(table_facts()["columns"])
    cols[2]["not_null"] = True
    by_index = table_facts(indexes=[unique], replident="i", columns=cols)
    assert [c.is_key for c in relation_from_facts(by_index).columns] == [False, False, True]
    assert details_from_facts(by_index).key == ("n",)
    generated = table_facts(columns=[*table_facts()["columns"], _col(4, "g", generated=True)])
    assert [c.name for c in relation_from_facts(generated).columns] == ["id", "a", "n"]
    # A DEFERRABLE primary key is no identity (as in catalog.py): under FULL every column is a key, no key column.
    deferrable = copy.deepcopy(table_facts(replident="f"))
    deferrable["indexes"][0]["immediate"] = False
    assert details_from_facts(deferrable).key == ()
    assert rel_from_facts(deferrable, {}, "").meta.identity == "full"
    assert relation_from_facts(table_facts(indexes=deferrable["indexes"])).columns[0].flags == 0


# -- steps ---------------------------------------------------------------------------------------------------
def test_a_new_table_is_created_with_its_columns_in_place() -> None:
    facts = table_facts(ddl=[_ddl(1, "id", not_null=True), _ddl(2, "a", "text", default="'x'::text"),
                             _ddl(3, "n", generated="(id * 2)"), _ddl(4, "r", identity="d", not_null=True)])
    change, _ = _change(_ddl_payload("CREATE TABLE", facts))
    sqls = [s.sql for s in change.steps]
    create = next(s for s in sqls if s.startswith("CREATE TABLE"))
    assert create == ('CREATE TABLE IF NOT EXISTS public.items ("id" integer NOT NULL, "a" text, "n" integer '
                      'GENERATED ALWAYS AS ((id * 2)) STORED, "r" integer GENERATED BY DEFAULT AS IDENTITY NOT NULL, '
                      'CONSTRAINT "items_pkey" PRIMARY KEY (id))')
    actions = [s.action for s in change.steps]
    assert actions.index("table") > sqls.index(create)
    assert 'ALTER TABLE public.items ALTER COLUMN "a" SET DEFAULT \'x\'::text' in sqls
    assert change.tables and change.tables[0].table == "public.items"


def test_renames_indexes_constraints_and_defaults_from_the_facts_before() -> None:
    before = table_facts(name="stock", qualified="public.stock",
                         indexes=[*table_facts()["indexes"], {"oid": 1010, "name": "old_idx", "valid": True,
                                                               "constraint": None, "def": ""}],
                         constraints=[*table_facts()["constraints"],
                                      {"oid": 1011, "name": "old_chk", "type": "c", "def": "CHECK ((n > 0))",
                                       "validated": False, "local": True}])
    now = table_facts(
        indexes=[*table_facts()["indexes"],
                 {"oid": 1010, "name": "new_idx", "valid": True, "constraint": None, "def": "x"},
                 {"oid": 1012, "name": "fresh", "valid": True, "constraint": None,
                  "def": "CREATE INDEX fresh ON public.items USING btree (a)"},
                 {"oid": 1013, "name": "building", "valid": False, "constraint": None, "def": "CREATE INDEX b"}],
        constraints=[*table_facts()["constraints"],
                     {"oid": 1011, "name": "new_chk", "type": "c", "def": "CHECK ((n > 0))", "validated": True,
                      "local": True},
                     {"oid": 1014, "name": "fk", "type": "f", "def": "FOREIGN KEY (n) REFERENCES public.other(id)",
                      "validated": True, "local": True, "ref": "public.other"}],
        ddl=[_ddl(1, "id", not_null=True), _ddl(2, "a", "text", default="'z'::text"), _ddl(3, "n")])
    before["ddl"] = [_ddl(1, "id", not_null=True), _ddl(2, "a", "text"), _ddl(3, "n", default="0")]
    change, _ = _change(_ddl_payload("ALTER TABLE", now), {1000: before})
    steps = [(s.action, s.sql) for s in change.steps]
    assert steps[0] == ("rename-table", "")
    assert change.steps[0].object == "public.stock" and change.steps[0].detail == "public.items"
    sqls = [sql for _a, sql in steps]
    assert 'ALTER INDEX IF EXISTS "public"."old_idx" RENAME TO "new_idx"' in sqls
    assert "CREATE INDEX IF NOT EXISTS fresh ON public.items USING btree (a)" in sqls
    assert not any("building" in s or s == "CREATE INDEX b" for s in sqls)  # not valid yet
    assert 'ALTER TABLE public.items RENAME CONSTRAINT "old_chk" TO "new_chk"' in sqls
    assert 'ALTER TABLE public.items VALIDATE CONSTRAINT "new_chk"' in sqls
    assert 'ALTER TABLE public.items ALTER COLUMN "a" SET DEFAULT \'z\'::text' in sqls
    assert 'ALTER TABLE public.items ALTER COLUMN "n" DROP DEFAULT' in sqls
    fk = next(s for s in change.steps if "FOREIGN KEY" in s.sql)
    assert fk.action == "optional-sql" and "public.other" in fk.detail


def test_enum_rename_value_and_add_value_in_place() -> None:
    before = {"kind": "type", "oid": 500, "schema": "public", "name": "mood", "qualified": "public.mood",
              "typtype": "e", "labels": [[1, "ok"], [2, "bad"]]}
    now = {**before, "labels": [[1, "ok"], [4, "meh"], [2, "awful"], [3, "worse"]]}
    payload = {"v": 1, "event": "ddl", "tag": "ALTER TYPE", "commands": [{"tag": "ALTER TYPE", "oid": 500}],
               "objects": {"500": now}}
    change, _ = _change(payload, {500: before})
    sqls = [s.sql for s in change.steps]
    assert any("RENAME VALUE ''bad'' TO ''awful''" in s for s in sqls)  # inside its guard's EXECUTE
    assert "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'meh' AFTER 'ok'" in sqls
    assert "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'worse' AFTER 'awful'" in sqls
    assert sqls.index(next(s for s in sqls if "RENAME VALUE" in s)) < sqls.index(
        "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'worse' AFTER 'awful'")


def test_types_domains_ranges_and_sequences_are_created_if_missing() -> None:
    domain = {"kind": "type", "oid": 600, "schema": "public", "name": "pos", "qualified": "public.pos",
              "typtype": "d", "base": "integer", "not_null": True, "default": "1",
              "checks": [{"oid": 601, "name": "pos_check", "def": "CHECK ((VALUE > 0))"}]}
    rng = {"kind": "type", "oid": 610, "schema": "public", "name": "span", "qualified": "public.span",
           "typtype": "r", "range": {"subtype": "integer", "multirange": "public.span_multirange"}}
    seq = {"kind": "sequence", "oid": 620, "schema": "public", "name": "tickets", "qualified": "public.tickets",
           "type": "bigint", "increment": "5", "min": "1", "max": "9223372036854775807", "start": "100", "cache": "1",
           "cycle": False, "owned_by": None, "identity": False}
    payload = {"v": 1, "event": "ddl", "tag": "CREATE", "objects": {"600": domain, "610": rng, "620": seq},
               "commands": [{"tag": "CREATE DOMAIN", "oid": 600}, {"tag": "CREATE TYPE", "oid": 610},
                            {"tag": "CREATE SEQUENCE", "oid": 620}]}
    sqls = [s.sql for s in _change(payload)[0].steps]
    assert "CREATE DOMAIN public.pos AS integer DEFAULT 1 NOT NULL CONSTRAINT \"pos_check\" CHECK ((VALUE > 0))" \
        in sqls[0]
    assert "to_regtype('public.pos') IS NULL" in sqls[0]
    assert "CREATE TYPE public.span AS RANGE (SUBTYPE = integer, MULTIRANGE_TYPE_NAME = public.span_multirange)" \
        in sqls[1]
    assert sqls[2] == ("CREATE SEQUENCE IF NOT EXISTS public.tickets AS bigint INCREMENT BY 5 MINVALUE 1 MAXVALUE "
                       "9223372036854775807 START WITH 100 CACHE 1 NO CYCLE")


def test_drops_only_what_was_named_and_drop_table_as_its_own_action() -> None:
    dropped = [
        {"type": "table", "identity": "public.gone", "original": True, "address": ["public", "gone"]},
        {"type": "index", "identity": "public.gone_pkey", "original": False, "schema": "public"},
        {"type": "index", "identity": "public.items_a", "original": True, "schema": "public"},
        {"type": "table constraint", "identity": "c on public.items", "original": True,
         "address": ["public", "items", "c"]},
        {"type": "table column", "identity": "public.items.g", "original": True, "oid": 1000,
         "address": ["public", "items", "g"]},
        {"type": "table", "identity": "other.t", "original": True, "address": ["other", "t"]},
    ]
    before = table_facts(ddl=[*table_facts()["ddl"], _ddl(4, "g", generated="(n + 1)")])
    change, _ = _change({"v": 1, "event": "drop", "tag": "DROP", "dropped": dropped}, {1000: before})
    steps = [(s.action, s.object, s.sql) for s in change.steps]
    assert ("drop-table", "public.gone", "DROP TABLE IF EXISTS public.gone") in steps
    assert ("sql", "public.items_a", "DROP INDEX IF EXISTS public.items_a") in steps
    assert ("sql", "public.items", 'ALTER TABLE IF EXISTS "public"."items" DROP CONSTRAINT IF EXISTS "c"') in steps
    assert ("sql", "public.items", 'ALTER TABLE "public"."items" DROP COLUMN IF EXISTS "g"') in steps
    assert not any("gone_pkey" in s[2] or "other" in s[1] for s in steps)  # a dependent, and out of scope


@pytest.mark.parametrize("reason, statement, resync", [
    (2, "ALTER TABLE items ADD COLUMN r float DEFAULT random()", True),
    (4, "ALTER TABLE items ALTER COLUMN n TYPE bigint USING n * 2", True),
    (4, "ALTER TABLE items ALTER COLUMN n TYPE bigint", False),
    (1, "ALTER TABLE items SET LOGGED", False),
])
def test_rewrites_whose_values_the_log_lacks_resync_the_table(reason: int, statement: str, resync: bool) -> None:
    payload = {"v": 1, "event": "rewrite", "tag": "ALTER TABLE", "oid": 1000, "name": "public.items",
               "reason": reason, "statement": statement}
    steps = _change(payload)[0].steps
    assert [(s.action, s.object) for s in steps] == ([("resync-table", "public.items")] if resync else [])


def test_failures_and_markers_become_resyncs_in_scope_only() -> None:
    failed = {"v": 1, "event": "failed", "tag": "ALTER TABLE", "error": "boom",
              "tables": [{"oid": 1, "name": "public.items"}, {"oid": 2, "name": "other.t"}]}
    assert [(s.action, s.object) for s in _change(failed)[0].steps] == [("resync-table", "public.items")]
    marker = {"v": 1, "event": "resync", "tables": [{"name": "public.late"}], "reason": "rows before"}
    assert [(s.action, s.object, s.detail) for s in _change(marker)[0].steps] == [
        ("resync-table", "public.late", "rows before")]


def test_a_table_not_published_here_gets_no_shape() -> None:
    skipped = table_facts(indexes=[], constraints=[], published=[])
    change, _ = _change(_ddl_payload("CREATE TABLE", skipped))
    assert not change.tables and not change.steps
    renamed_out = table_facts(schema="archive", qualified="archive.items")
    change, notes = _change(_ddl_payload("ALTER TABLE", renamed_out), {1000: table_facts()})
    assert not change.steps and "no longer replicated" in notes[0]


# -- small pieces --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, name, match", [
    ("public.*", "public.items", True), ("public.*", "publicx.items", False), ("public.*", "app.items", False),
    ("app.t_?", "app.t_1", True), ("app.t_?", "app.t_12", False), ("s.[ab]*", "s.beta", True),
    ("s.[!ab]*", "s.beta", False), ("s.[!ab]*", "s.gamma", True), ("a+b.c(d)", "a+b.c(d)", True),
])
def test_fnmatch_patterns_become_the_same_posix_regex(pattern: str, name: str, match: bool) -> None:
    assert bool(re.match(pattern_regex(pattern), name)) is match


def test_guarded_statements_survive_any_dollar_quote_and_quotes() -> None:
    sql = guarded("true", "CREATE FUNCTION f() RETURNS int AS $ark$ SELECT 'x' $ark$ LANGUAGE sql")
    assert sql.startswith("DO $ark_$ BEGIN IF true THEN EXECUTE 'CREATE FUNCTION f() RETURNS int AS $ark$ SELECT "
                          "''x'' $ark$ LANGUAGE sql'; END IF; END $ark_$")


def test_identities_unquote() -> None:
    assert _unquote('"Sales"."Order"') == "Sales.Order"
    assert _unquote('public."we""ird.name"') == 'public.we"ird.name'

"""Issue 9's pure logic: reading and filtering pg_dump's entries, the promotable comparison, identity columns
left out of UPDATEs, the SequenceValues entry and its schema rule."""

from __future__ import annotations

import copy

import pytest

from common.snapshot import ObjectDef
from consumers.postgresql.plan import split_runs, without_columns
from consumers.postgresql.promotable import Inventory, compare
from producers.postgresql.dump import PG_ATTRDEF, PG_CLASS, PG_CONSTRAINT, DumpEntry, choose, parse
from schemas import envelope, registry
from schemas.compat import check_pair
from schemas.entries import (
    REDO_SCHEMA,
    Column,
    Op,
    RedoEntry,
    RowChange,
    SequenceValue,
    SequenceValues,
    TableMeta,
    from_record,
    to_record,
)
from schemas.errors import IncompatibleSchema

# What `pg_restore --verbose --section=pre-data -f -` writes (abridged, PostgreSQL 15.18).
DUMP = r"""--
-- PostgreSQL database dump
--

\restrict gfWus9ogQa1RwvDaju7OhUA3

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;

--
-- TOC entry 960 (class 1247 OID 16619)
-- Name: mood; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.mood AS ENUM (
    'sad',
    'ok'
);


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- TOC entry 217 (class 1259 OID 16629)
-- Name: t; Type: TABLE; Schema: public; Owner: -
-- Data Pos: 0
--

CREATE TABLE public.t (
    id integer NOT NULL,
    m public.mood
);


--
-- TOC entry 3582 (class 0 OID 0)
-- Dependencies: 217
-- Name: TABLE t; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.t IS 'the t';


--
-- TOC entry 218 (class 1259 OID 16640)
-- Name: other; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.other (
    id integer NOT NULL
);


--
-- TOC entry 3583 (class 0 OID 0)
-- Dependencies: 218
-- Name: TABLE other; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.other IS 'not replicated';


--
-- TOC entry 3414 (class 0 OID 0)
-- Name: t_2024; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.t ATTACH PARTITION public.t_2024 FOR VALUES FROM (1) TO (10);


--
-- TOC entry 3416 (class 2604 OID 16632)
-- Name: t id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval('public.t_id_seq'::regclass);


--
-- TOC entry 3450 (class 2606 OID 16700)
-- Dependencies: 217
-- Name: t t_other_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.t
    ADD CONSTRAINT t_other_fkey FOREIGN KEY (id) REFERENCES public.other(id);


-- Completed on 2026-11-30 14:08:05 UTC

--
-- PostgreSQL database dump complete
--

\unrestrict LjlNwLuSxhEMKbOeNGoxWf6IDTSUa6i1
"""


def test_parse_reads_every_entry_with_its_identity_and_sql_only() -> None:
    entries = parse(DUMP)
    assert [(e.toc, e.classid, e.oid, e.kind, e.schema, e.name) for e in entries] == [
        (960, 1247, 16619, "TYPE", "public", "mood"), (217, PG_CLASS, 16629, "TABLE", "public", "t"),
        (3582, 0, 0, "COMMENT", "public", "TABLE t"), (218, PG_CLASS, 16640, "TABLE", "public", "other"),
        (3583, 0, 0, "COMMENT", "public", "TABLE other"), (3414, 0, 0, "TABLE ATTACH", "public", "t_2024"),
        (3416, PG_ATTRDEF, 16632, "DEFAULT", "public", "t id"),
        (3450, PG_CONSTRAINT, 16700, "FK CONSTRAINT", "public", "t t_other_fkey")]
    assert entries[0].sql == "CREATE TYPE public.mood AS ENUM (\n    'sad',\n    'ok'\n);"  # no SET lines after it
    assert entries[2].deps == (217,)
    assert entries[-1].sql.endswith("REFERENCES public.other(id);")  # no closing comments, no \unrestrict
    assert all("restrict" not in e.sql and "SET default" not in e.sql for e in entries)


def test_choose_keeps_what_the_replicated_tables_need_and_names_what_it_left_out() -> None:
    entries = parse(DUMP)
    t, t_2024, other = 16629, 16650, 16640
    owners = {(PG_CLASS, 16629): (t,), (PG_CLASS, 16640): (other,), (PG_ATTRDEF, 16632): (t,),
              (PG_CONSTRAINT, 16700): (t, other)}
    kept, left_out = choose(entries, owners, {"public.t_2024": (t_2024,)}, {t: "public.t", t_2024: "public.t_2024"})
    assert [(d.kind, d.name, d.table) for _toc, d in kept] == [
        ("TYPE", "public.mood", ""), ("TABLE", "public.t", "public.t"), ("COMMENT", "public.TABLE t", "public.t"),
        ("TABLE ATTACH", "public.t_2024", "public.t_2024"), ("DEFAULT", "public.t id", "public.t")]
    # the table that is not replicated goes, with its comment; the foreign key to it is reported
    assert left_out == ["FK CONSTRAINT public.t t_other_fkey (of public.t): it involves a table that is not "
                        "replicated"]


def test_an_attach_of_a_partition_that_is_not_kept_is_dropped() -> None:
    entries = [e for e in parse(DUMP) if e.kind == "TABLE ATTACH"]
    kept, _ = choose(entries, {}, {"public.t_2024": (99,)}, {16629: "public.t"})
    assert kept == []


def _inv(**kw: object) -> Inventory:
    inv = Inventory()
    for k, v in kw.items():
        setattr(inv, k, v)
    return inv


def test_compare_is_empty_for_equal_sides() -> None:
    side = _inv(extensions={"citext": "1.6"}, types={"public.mood": ("e", ["a", "b"])},
                sequences={"public.s": ("bigint increment 1", 10, 1)}, tables={"public.t": ("r", "", "")},
                columns={("public.t", "id"): "integer NOT NULL"}, indexes={("public.t", "public.t_pkey"): "CREATE"},
                rows={"public.t": 3})
    assert compare(side, copy.deepcopy(side), "sb") == []


def test_compare_names_every_lack_with_its_fix() -> None:
    primary = _inv(extensions={"hstore": "1.8"}, types={"public.mood": ("e", ["sad", "ok", "happy"])},
                   sequences={"public.s": ("bigint increment 1", 50, 1), "public.down": ("bigint increment -1", 5, -1)},
                   tables={"public.t": ("r", "", ""), "public.p_1": ("r", "", "public.p FOR VALUES IN (1)")},
                   columns={("public.t", "id"): "integer NOT NULL DEFAULT nextval('public.s'::regclass)"},
                   constraints={("public.t", "t_pkey"): "PRIMARY KEY (id)"},
                   indexes={("public.t", "public.t_x"): "CREATE INDEX t_x ON public.t USING btree (x)"},
                   rows={"public.t": 7})
    standby = _inv(types={"public.mood": ("e", ["sad", "happy"])},
                   sequences={"public.s": ("bigint increment 1", 40, 1), "public.down": ("bigint increment -1", 9, -1)},
                   tables={"public.t": ("r", "", "")}, columns={("public.t", "id"): "integer NOT NULL"},
                   constraints={("public.t", "t_pkey"): "PRIMARY KEY (id)"}, rows={"public.t": 6},
                   owned=[("public.s", "public.t", "id", 40, 45)])
    lacks = {(lack.subject, lack.fix.split(" ")[0]) for lack in compare(primary, standby, "sb")}
    text = " | ".join(f"{x.subject}: {x.what} -> {x.fix}" for x in compare(primary, standby, "sb"))
    assert ("extension hstore", "install") in lacks
    assert "ALTER TYPE \"public\".\"mood\" ADD VALUE 'ok' AFTER 'sad'" in text
    assert "sequence public.s: at 40 on the standby, 50 on the primary" in text
    assert "sequence public.down: at 9 on the standby, 5 on the primary" in text  # descending: behind is higher
    assert "table public.p_1: missing" in text
    assert "column public.t.id: differs" in text
    assert "index public.t_x of public.t: missing" in text and "ark resync sb --table public.t" in text
    assert "rows of public.t: 7 on the primary, 6 on the standby" in text
    assert "holds 45 there" in text and "SELECT setval('public.s', 45)" in text
    assert not any(x.subject == "constraint t_pkey of public.t" for x in compare(primary, standby, "sb"))


def test_enum_labels_in_another_order_need_the_type_recreated() -> None:
    primary = _inv(types={"public.mood": ("e", ["a", "b"])})
    standby = _inv(types={"public.mood": ("e", ["b", "a"])})
    (lack,) = compare(primary, standby, "sb")
    assert "recreate" in lack.fix


_META = TableMeta("public.t", (Column("id", "int64", "bigint", False, 1), Column("seq", "int64", "bigint"),
                               Column("v", "string", "text")), "v1")


def test_an_update_leaves_generated_always_identity_columns_alone() -> None:
    (run,) = split_runs({"public.t": _META}, [RowChange("public.t", Op.UPDATE, [1, 7, "a"]),
                                              RowChange("public.t", Op.UPDATE, [2, 8, "b"])])
    slim = without_columns(_META, run, frozenset({"seq", "id"}))
    assert slim.cols == (0, 2) and slim.values == [[1, "a"], [2, "b"]] and slim.keys == run.keys  # the key stays
    assert without_columns(_META, run, frozenset({"other"})) is run


def test_sequence_values_round_trip_and_are_a_new_kind_of_entry() -> None:
    entry = RedoEntry("g", "postgresql", 2, SequenceValues(1_700_000_000_000_000, (
        SequenceValue("public.t_id_seq", 42), SequenceValue("Billing.n", -5, False)), "0/1A", "r1,r2"))
    env = envelope.encode(REDO_SCHEMA, to_record(entry), epoch=2, source_position="0/1A")
    assert from_record(envelope.decode(env.value, env.headers).record) == entry
    v4 = next(s for s in registry.all_versions() if s.name == REDO_SCHEMA and s.version == 4)
    check_pair(v4.raw, registry.current(REDO_SCHEMA).raw, REDO_SCHEMA)  # a new union branch: allowed
    broken = copy.deepcopy(registry.current(REDO_SCHEMA).raw)
    body = next(f for f in broken["fields"] if f["name"] == "body")
    body["type"] = [b for b in body["type"] if b.get("name") != "EpochMarker"]  # a branch removed: not allowed
    with pytest.raises(IncompatibleSchema):
        check_pair(v4.raw, broken, REDO_SCHEMA)


def test_object_defs_know_their_table() -> None:
    d = ObjectDef("INDEX", "public.t_x", "CREATE INDEX ...", "public.t")
    assert d.table == "public.t" and DumpEntry(1, 0, 0, (), "INDEX", "t_x", "public", "").label == "INDEX public.t_x"


def test_updates_of_a_table_with_other_unique_keys_keep_every_image_in_order() -> None:
    """Row 1 gives up its value through a spare one so that row 2 can take it: folding row 1's two images into
    the last one would make row 1 take row 2's value before row 2 gave it up."""
    changes = [RowChange("public.t", Op.UPDATE, [1, 0, "spare"]), RowChange("public.t", Op.UPDATE, [2, 0, "a"]),
               RowChange("public.t", Op.UPDATE, [1, 0, "b"])]
    folded = split_runs({"public.t": _META}, changes)
    assert [r.values for r in folded] == [[[1, 0, "b"], [2, 0, "a"]]]  # no other unique key: last writer wins
    kept = split_runs({"public.t": _META}, changes, ordered={"public.t"})
    assert [v for r in kept for v in r.values] == [[1, 0, "spare"], [2, 0, "a"], [1, 0, "b"]]


def test_promotable_lists_the_tables_the_stream_does_not_fully_protect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: every table that is not fully protected is listed by ``ark check --promotable`` too; a primary
    without the DDL hook is ``ark check``'s warning, not a missing object."""
    from common.problems import Problem
    from ops import promotable

    found = [
        Problem("table public.log has no usable key (primary.keyless: insert-only): only its INSERTs and "
                "TRUNCATEs are replicated", fix="ALTER TABLE ... ADD PRIMARY KEY (...)", fatal=False),
        Problem("table public.tmp is UNLOGGED: not replicated", fix="ALTER TABLE public.tmp SET LOGGED", fatal=False),
        Problem("Ark's DDL event trigger is not installed", fix="run 'ark capture'", fatal=False),
    ]

    class Capture:
        def protection(self) -> list[Problem]:
            return found

        def close(self) -> None:
            pass

    monkeypatch.setattr(promotable, "capture_factory", lambda cfg: Capture)
    lacks = promotable.unprotected_tables(None)  # type: ignore[arg-type]
    assert [(lack.subject, lack.fix) for lack in lacks] == [
        ("table public.log", "ALTER TABLE ... ADD PRIMARY KEY (...)"),
        ("table public.tmp", "ALTER TABLE public.tmp SET LOGGED")]

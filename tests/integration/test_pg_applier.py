"""The PostgreSQL applier against a real PostgreSQL 15 standby (session instances from conftest)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from common.engines.postgresql import PostgresPrimary, PostgresStandby
from common.errors import TargetError
from common.secrets import SecretRef
from consumers.base import ApplyState
from consumers.errors import DataApplyError, TableNeedsResync, TransientApplyError
from consumers.postgresql.applier import PostgresApplier
from producers.postgresql.snapshot import PostgresSnapshotSource
from schemas.entries import UNCHANGED, Column, Op, PartRef, RowChange, TableMeta, ValuePart

ORDER = TableMeta("Sales.Order", (
    Column("Id", "int64", "bigint", nullable=False, key_position=1),
    Column("Note", "string", "text"),
    Column("amount", "decimal", "numeric(12,2)"),
    Column("at", "timestamptz", "timestamp with time zone"),
    Column("blob", "bytes", "bytea"),
    Column("ok", "boolean", "boolean"),
    Column("doc", "json", "jsonb"),
    Column("uid", "uuid", "uuid"),
    Column("tags", "other", "integer[]"),
    Column("f", "float64", "double precision"),
), version="1")
WIDE = TableMeta("public.w", (
    Column("id", "int32", "integer", nullable=False, key_position=1),
    Column("a", "int32", "integer"),
    Column("n", "decimal", "numeric(12,2)"),
    Column("s", "string", "text"),
), version="1")
UID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
PATHS = pytest.mark.parametrize("threshold", [1, 10_000], ids=["set-based", "per-row"])


def settings_for(inst: Any, dbname: str, **kw: Any) -> PostgresStandby:
    return PostgresStandby(engine="postgresql", name="sb1", host="127.0.0.1", port=inst.port, dbname=dbname, **kw)


@pytest.fixture
def db(fresh_db: Any) -> Any:
    return fresh_db


def make(db: Any, threshold: int = 200) -> PostgresApplier:
    app = PostgresApplier(settings_for(db.standby, db.name), set_threshold=threshold)
    app.prepare()
    return app


@pytest.fixture
def app(db: Any) -> Iterator[PostgresApplier]:
    applier = make(db)
    yield applier
    applier.close()


def query(db: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.standby_dsn, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()  # type: ignore[arg-type]


def order_row(i: int, note: object = "n") -> RowChange:
    return RowChange(ORDER.table, Op.INSERT, [i, note, "12.50", "2024-05-01 10:00:00+00", b"\x00\x01\\\t",
                                              True, '{"a": [1, "x\\ty"]}', UID, "{1,2,3}", 1.5])


def state(n: int, group: str = "g") -> ApplyState:
    return ApplyState(group, "sb1", "ark.g.redo", 0, n, f"0/{n}", n.to_bytes(8, "big"), 1, 1000 + n, 2000 + n, n)


def setup_table(app: PostgresApplier, meta: TableMeta = ORDER, group: str = "g") -> None:
    app.begin()
    app.apply_table_meta(group, meta, None)
    app.commit()


@PATHS
def test_every_op_and_types(db: Any, threshold: int) -> None:
    app = make(db, threshold)
    setup_table(app)
    metas = {ORDER.table: ORDER}
    app.begin()
    app.apply_rows(metas, [order_row(i) for i in range(1, 6)], "t1", "0/1")
    app.apply_rows(metas, [
        RowChange(ORDER.table, Op.UPDATE, [2, "changed", UNCHANGED, UNCHANGED, UNCHANGED, False, UNCHANGED,
                                           UNCHANGED, UNCHANGED, float("inf")]),
        RowChange(ORDER.table, Op.UPDATE, [30, "moved", "1.00", None, None, None, None, None, None, None], [3]),
        RowChange(ORDER.table, Op.DELETE, [], [4]),
        RowChange(ORDER.table, Op.UPDATE, [5, "a\tb\nc\\d", "99.99", UNCHANGED, UNCHANGED, UNCHANGED, UNCHANGED,
                                           UNCHANGED, UNCHANGED, UNCHANGED]),
    ], "t2", "0/2")
    app.save_state(state(2))
    app.commit()
    rows = {r[0]: r for r in query(db, 'SELECT "Id", "Note", amount::text, at, blob, ok, doc::text, uid::text, '
                                       'tags, f FROM "Sales"."Order" ORDER BY 1')}
    assert sorted(rows) == [1, 2, 5, 30]
    one = rows[1]
    assert one[1:3] == ("n", "12.50") and one[3].year == 2024 and one[4] == b"\x00\x01\\\t"
    assert one[5] is True and one[6] == '{"a": [1, "x\\ty"]}' and one[7] == UID and one[8] == [1, 2, 3]
    assert rows[2][1:3] == ("changed", "12.50") and rows[2][5] is False and rows[2][9] == float("inf")
    assert rows[2][4] == b"\x00\x01\\\t"  # UNCHANGED kept the standby's value
    assert rows[30][1:3] == ("moved", "1.00") and rows[30][4] is None
    assert rows[5][1:3] == ("a\tb\nc\\d", "99.99") and rows[5][6] == '{"a": [1, "x\\ty"]}'
    assert app.load_state("g", "sb1") == state(2)
    assert app.load_table_metas("g") == {ORDER.table: ORDER}
    app.begin()
    app.apply_rows(metas, [RowChange(ORDER.table, Op.TRUNCATE)], "t3", "0/3")
    app.commit()
    assert query(db, 'SELECT count(*) FROM "Sales"."Order"') == [(0,)]
    app.close()


def test_ddl_add_drop_alter(app: PostgresApplier, db: Any) -> None:
    setup_table(app, WIDE)
    app.begin()
    app.apply_rows({WIDE.table: WIDE}, [RowChange(WIDE.table, Op.INSERT, [1, 2, "3.00", "x"])], "t1", "0/1")
    v2 = TableMeta(WIDE.table, (WIDE.columns[0], Column("a", "int64", "bigint"), WIDE.columns[2],
                                Column("extra", "string", "character varying(10)")), version="2")
    app.apply_table_meta("g", v2, WIDE)
    app.apply_rows({WIDE.table: v2}, [RowChange(WIDE.table, Op.INSERT, [2, 2**40, "1.00", "new"])], "t2", "0/2")
    app.commit()
    cols = query(db, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                     "'public.w'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
    assert cols == [("id", "integer"), ("a", "bigint"), ("n", "numeric(12,2)"), ("extra", "character varying(10)")]
    assert query(db, "SELECT id, a, extra FROM w ORDER BY id") == [(1, 2, None), (2, 2**40, "new")]
    assert app.load_table_metas("g")[WIDE.table] == v2
    # a change the standby cannot follow (it needs the primary's USING expression) asks for a resync of
    # that table alone, naming it and the column, and nothing is half-done
    v3 = TableMeta(WIDE.table, (*v2.columns[:3], Column("extra", "int32", "integer")), version="3")
    app.begin()
    app.apply_rows({WIDE.table: v2}, [RowChange(WIDE.table, Op.INSERT, [3, 1, "1.00", "abc"])], "t3", "0/3")
    with pytest.raises(TableNeedsResync) as err:
        app.apply_table_meta("g", v3, v2)
    assert err.value.table == WIDE.table and "extra" in err.value.reason and "resync" in err.value.fix
    assert query(db, "SELECT count(*) FROM w") == [(2,)]


@pytest.mark.parametrize("path", ["set", "per-row"])
def test_100k_update_both_paths(db: Any, path: str) -> None:
    app = make(db, 200 if path == "set" else 10**9)
    setup_table(app, WIDE)
    metas = {WIDE.table: WIDE}
    n = 100_000 if path == "set" else 20_000
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [i, i, "1.00", f"r{i}"]) for i in range(n)], "t1", "0/1")
    app.commit()
    changes = [RowChange(WIDE.table, Op.UPDATE, [i, i * 2, f"{i % 1000}.25", UNCHANGED]) for i in range(n)]
    changes.insert(n // 2, RowChange(WIDE.table, Op.UPDATE, [7, -1, "0.00", "seven"]))  # same key again
    started = time.monotonic()
    app.begin()
    app.apply_rows(metas, changes, "t2", "0/2")
    app.commit()
    print(f"{path}: {len(changes)} updates in {time.monotonic() - started:.2f}s")
    bad = query(db, "SELECT count(*) FROM w WHERE id <> 7 AND (a <> id * 2 OR n <> (id % 1000) + 0.25 "
                    "OR s <> 'r' || id)")
    assert bad == [(0,)]
    assert query(db, "SELECT a, n::text, s FROM w WHERE id = 7") == [(-1, "0.00", "seven")]  # the later change wins
    app.close()


@PATHS
def test_missing_row_is_a_data_error(db: Any, threshold: int) -> None:
    app = make(db, threshold)
    setup_table(app, WIDE)
    metas = {WIDE.table: WIDE}
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [i, 0, "0", "x"]) for i in range(3)], "t1", "0/1")
    app.save_state(state(1))
    app.commit()
    for op, change in (("update", RowChange(WIDE.table, Op.UPDATE, [42, 1, "1", "y"])),
                       ("delete", RowChange(WIDE.table, Op.DELETE, [], [42]))):
        app.begin()
        with pytest.raises(DataApplyError) as err:
            app.apply_rows(metas, [RowChange(WIDE.table, Op.UPDATE, [0, 5, "5", "z"]), change,
                                   RowChange(WIDE.table, Op.DELETE, [], [1])], "txn-77", "0/ABC")
        e = err.value
        assert f"{op} of a missing row" in str(e) and "public.w" in str(e) and "42" in str(e)
        assert "txn-77" in str(e) and "0/ABC" in str(e)
        assert (e.table, e.txn_id, e.position, list(e.key)) == ("public.w", "txn-77", "0/ABC", [42])  # type: ignore
        app.rollback()
        assert query(db, "SELECT id, a FROM w ORDER BY id") == [(0, 0), (1, 0), (2, 0)]
    app.close()


@PATHS
def test_duplicate_insert_is_a_data_error(db: Any, threshold: int) -> None:
    app = make(db, threshold)
    setup_table(app, WIDE)
    metas = {WIDE.table: WIDE}
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [1, 0, "0", "x"])], "t1", "0/1")
    app.commit()
    app.begin()
    with pytest.raises(DataApplyError) as err:
        app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [i, 0, "0", "x"]) for i in (5, 1, 6)], "t2", "0/2")
    assert err.value.table == "public.w" and err.value.txn_id == "t2" and "already exists" in str(err.value)
    assert "(id)=(1)" in str(err.value)
    assert query(db, "SELECT id FROM w") == [(1,)]
    app.close()


def test_type_error_is_a_data_error(app: PostgresApplier, db: Any) -> None:
    setup_table(app, WIDE)
    app.begin()
    with pytest.raises(DataApplyError) as err:
        app.apply_rows({WIDE.table: WIDE}, [RowChange(WIDE.table, Op.INSERT, [1, 0, "abc", "x"])], "t9", "0/9")
    assert err.value.table == "public.w" and "t9" in str(err.value) and "numeric" in str(err.value)


def test_rollback_leaves_nothing(app: PostgresApplier, db: Any) -> None:
    setup_table(app, WIDE)
    metas = {WIDE.table: WIDE}
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [i, 0, "0", "x"]) for i in range(500)], "t1", "0/1")
    app.save_state(state(1))
    app.rollback()
    app.rollback()  # safe twice
    assert app.load_state("g", "sb1") is None
    assert query(db, "SELECT count(*) FROM w") == [(0,)]
    # a failure after rows and state were written rolls back both
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [1, 0, "0", "x"])], "t1", "0/1")
    app.save_state(state(1))
    with pytest.raises(DataApplyError):
        app.apply_rows(metas, [RowChange(WIDE.table, Op.DELETE, [], [999])], "t2", "0/2")
    assert app.load_state("g", "sb1") is None
    assert query(db, "SELECT count(*) FROM w") == [(0,)]
    with pytest.raises(RuntimeError):
        app.save_state(state(2))  # begin() first


def test_parts_of_a_large_value_after_a_rollback(app: PostgresApplier, db: Any) -> None:
    """The parts table is created in the transaction of the first part: after that transaction rolls back
    (a restart of the batch), the next value's parts still find it; rows assemble byte for byte."""
    import crc32c

    meta = TableMeta("public.doc", (Column("id", "int32", "integer", nullable=False, key_position=1),
                                    Column("body", "bytes", "bytea"), Column("note", "string", "text")),
                     version="1")
    setup_table(app, meta)
    body, note = os.urandom(3000), "é€𝄞" * 500
    note_bytes = note.encode()

    def put(row: int) -> None:
        for column, data in ((1, body), (2, note_bytes)):
            for index in range(3):
                chunk = data[index * len(data) // 3:(index + 1) * len(data) // 3]
                app.store_part(ValuePart("public.doc", row, column, index, 3, len(data), chunk))

    refs = [PartRef(0, 1, 3, len(body), crc32c.crc32c(body)), PartRef(0, 2, 3, len(note_bytes),
                                                                      crc32c.crc32c(note_bytes))]
    app.begin()
    put(0)
    app.rollback()
    app.begin()
    put(0)
    app.apply_rows({meta.table: meta}, [RowChange(meta.table, Op.INSERT, [7, None, None], parts=refs)], "t1", "0/1")
    app.save_state(state(1))
    app.commit()
    assert query(db, "SELECT body, note FROM doc WHERE id = 7") == [(body, note)]


def test_read_only_for_other_sessions(app: PostgresApplier, db: Any) -> None:
    setup_table(app, WIDE)
    app.begin()
    app.apply_rows({WIDE.table: WIDE}, [RowChange(WIDE.table, Op.INSERT, [1, 0, "0", "x"])], "t1", "0/1")
    app.commit()
    with psycopg.connect(db.standby_dsn, autocommit=True) as other:
        assert other.execute("SELECT count(*) FROM w").fetchone() == (1,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            other.execute("INSERT INTO w VALUES (2, 0, 0, 'y')")
    app.prepare()  # idempotent
    assert app.check_prerequisites() == []


def test_wrong_password_is_a_target_error(pg_factory: Any) -> None:
    secret = "s3cr3t-Do-Not-Print"
    inst = pg_factory("pw", password=secret)
    os.environ["ARK_TEST_WRONG_PW"] = "not-" + secret
    try:
        bad = PostgresApplier(settings_for(inst, "postgres", password=SecretRef(env="ARK_TEST_WRONG_PW")))
        with pytest.raises(TargetError) as err:
            bad.prepare()
        text = f"{err.value} {err.value.fix}"
        assert secret not in text and "not-" not in text
        assert f"127.0.0.1:{inst.port}" in text and "postgres@" in text and "password" in text
        assert "\n" not in err.value.message
        problems = bad.check_prerequisites()
        assert len(problems) == 1 and secret not in problems[0].what
        os.environ["ARK_TEST_WRONG_PW"] = secret
        good = PostgresApplier(settings_for(inst, "postgres", password=SecretRef(env="ARK_TEST_WRONG_PW")))
        assert good.server_version().startswith("15")
        good.close()
    finally:
        del os.environ["ARK_TEST_WRONG_PW"]
        inst.stop(mode="immediate")


def test_unreachable_is_a_target_error() -> None:
    app = PostgresApplier(PostgresStandby(engine="postgresql", name="gone", host="127.0.0.1", port=1,
                                          connect_timeout_s=2))
    with pytest.raises(TargetError, match="cannot connect to standby gone"):
        app.load_state("g", "gone")


def test_terminated_connection_is_transient(app: PostgresApplier, db: Any) -> None:
    setup_table(app, WIDE)
    metas = {WIDE.table: WIDE}
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [i, 0, "0", "x"]) for i in range(300)], "t1", "0/1")
    app.save_state(state(1))
    pid = app.conn.info.backend_pid
    assert query(db, "SELECT pg_terminate_backend(%s)", pid) == [(True,)]
    with pytest.raises(TransientApplyError):
        app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [1000, 0, "0", "x"])], "t2", "0/2")
    assert query(db, "SELECT count(*) FROM w") == [(0,)]
    assert app.load_state("g", "sb1") is None  # reconnected by itself; nothing was applied
    app.begin()
    app.apply_rows(metas, [RowChange(WIDE.table, Op.INSERT, [1, 0, "0", "x"])], "t1", "0/1")
    app.save_state(state(1))
    app.commit()
    assert query(db, "SELECT count(*) FROM w") == [(1,)]


def test_snapshot_rows_load_natively_and_as_values(db: Any) -> None:
    """A snapshot holds exactly what committed before its position; both load paths give the same table."""
    with psycopg.connect(db.primary_dsn, autocommit=True) as prim:
        prim.execute('CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Order" ("Id" bigint PRIMARY KEY, "Note" text, '
                     "amount numeric(12,2) NOT NULL, blob bytea, tags int[], at timestamptz, f float8)")
        prim.execute("CREATE TABLE public.other (x int)")
        prim.execute('INSERT INTO "Sales"."Order" SELECT g, E\'n\\t\' || g || E\'\\\\\\n\', g / 100.0, '
                     "'\\x00ff'::bytea, ARRAY[g, 2], '2024-01-01Z', 1.0 / g FROM generate_series(1, 20000) g")
    primary = PostgresPrimary(engine="postgresql", name="p", host="127.0.0.1", port=db.primary.port, dbname=db.name)
    with PostgresSnapshotSource(primary).open() as snap:
        with psycopg.connect(db.primary_dsn, autocommit=True) as prim:
            prim.execute('INSERT INTO "Sales"."Order" VALUES (999999, \'after\', 1, NULL, NULL, NULL, NULL)')
        metas = snap.tables(["Sales.*"])
        assert [m.table for m in metas] == ["Sales.Order"]
        meta = metas[0]
        assert [(c.name, c.type, c.source_type, c.nullable, c.key_position) for c in meta.columns] == [
            ("Id", "int64", "bigint", False, 1), ("Note", "string", "text", True, 0),
            ("amount", "decimal", "numeric(12,2)", False, 0), ("blob", "bytes", "bytea", True, 0),
            ("tags", "other", "integer[]", True, 0), ("at", "timestamptz", "timestamp with time zone", True, 0),
            ("f", "float64", "double precision", True, 0)]
        values = list(snap.rows(meta).values())  # read whole: an abandoned COPY would end the snapshot
        assert len(values) == 20000
        assert values[0] == [1, "n\t1\\\n", "0.01", b"\x00\xff", "{1,2}", "2024-01-01 00:00:00+00", 1.0]
        loaded: dict[str, int] = {}
        for path in ("native", "values"):
            app = make(db)
            setup_table(app, replace(meta, table=f"Sales.{path}"))
            rows = snap.rows(meta)
            if path == "values":
                rows.native_format = None  # force the engine-neutral path (what a foreign target uses)
            seen: list[int] = []
            app.begin()
            loaded[path] = app.bulk_load(rows, into=f"Sales.{path}", progress=seen.append)
            app.commit()
            app.close()
            assert seen and seen[-1] == 20000
    assert loaded == {"native": 20000, "values": 20000}
    for path in ("native", "values"):
        assert query(db, f'SELECT count(*), sum("Id"), min("Note"), sum(amount)::text, count(DISTINCT blob), '
                         f'min(blob::text), min(tags), count(*) FILTER (WHERE f <> 1.0 / "Id") '
                         f'FROM "Sales"."{path}"') == [
            (20000, 200010000, "n\t10000\\\n", "2000100.00", 1, "\\x00ff", [1, 2], 0)]
    assert query(db, 'SELECT count(*) FROM (SELECT * FROM "Sales".native EXCEPT SELECT * FROM "Sales"."values") d'
                 ) == [(0,)]

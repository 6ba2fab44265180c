"""A faithful, promotable standby (issue 9: every object, sequences, ``ark check --promotable``).

Real Kafka, real PostgreSQL, real ``ark`` processes. The schema corpus (tests/support/corpus.py) is what
real applications create; after sync and after streaming under load the standbys must be equal row by
row (``ark verify``), lack nothing (``ark check --promotable``), and take their first inserts as a
promoted primary would, without a duplicate key.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from common.exit_codes import ExitCode
from deploy.workload import BankWorkload, create_bank
from tests.support.corpus import TABLES, CorpusWriter, create_corpus, promote_by_hand
from tests.support.replication import Group, sql, wait_for

BANK = ["public.accounts", "public.history"]


def _promotable(group: Group, standby: str) -> tuple[bool, str]:
    res = group.ark("check", "--promotable", standby)
    return res.returncode == 0, res.stdout + res.stderr


def _assert_promotable(group: Group, standby: str, timeout: float = 0) -> None:
    """``ark check --promotable`` exits 0 (within ``timeout``: sequence values arrive about every second)."""
    last: list[str] = [""]

    def clean() -> bool:
        ok, last[0] = _promotable(group, standby)
        return ok

    if timeout:
        try:
            wait_for(clean, timeout, f"'ark check --promotable {standby}' to pass", interval=1.0)
        except AssertionError:
            raise AssertionError(last[0]) from None
    else:
        assert clean(), last[0]


def _equal(group: Group, standby: str, tables: list[str], timeout: float = 90) -> None:
    """Wait until ``tables`` are equal on ``standby`` row by row (a table the standby lacks yet is "not yet")."""
    last: list[Any] = []

    def equal() -> bool:
        group.assert_agents_alive()
        try:
            last[:] = group.diffs(standby, tables)
        except psycopg.Error as exc:
            last[:] = [str(exc)]
            return False
        return all(d.equal for d in last)

    try:
        wait_for(equal, timeout, f"{tables} equal on {standby}", interval=0.5)
    except AssertionError:
        raise AssertionError(f"{standby}: {last}") from None


def _objects(dsn: str) -> dict[str, Any]:
    """What the standby must have besides rows, as comparable facts."""
    return {
        "enum": sql(dsn, "SELECT array_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = "
                         "'\"Billing\".\"Currency\"'::regtype"),
        "extensions": sql(dsn, "SELECT extname FROM pg_extension WHERE extname IN ('citext', 'hstore') ORDER BY 1"),
        "partitions": sql(dsn, "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                               "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'measurements'::regclass "
                               "ORDER BY 1"),
        "generated": sql(dsn, "SELECT attgenerated FROM pg_attribute WHERE attrelid = 'orders'::regclass "
                              "AND attname = 'amount'"),
        "identity": sql(dsn, "SELECT attname, attidentity FROM pg_attribute WHERE attrelid IN "
                             "('events'::regclass, 'bookings'::regclass) AND attidentity <> '' ORDER BY 1, 2"),
        "defaults": sql(dsn, "SELECT count(*) FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid "
                             "WHERE c.relname IN ('customers', 'orders', 'Invoice', 'measurements')"),
        "indexes": sql(dsn, "SELECT indexname FROM pg_indexes WHERE tablename IN ('customers', 'orders', "
                            "'measurements') AND indexname NOT LIKE '%%pkey' ORDER BY 1"),
        "exclusion": sql(dsn, "SELECT count(*) FROM pg_constraint WHERE contype = 'x'"),
        "foreign keys": sql(dsn, "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                                 "WHERE contype = 'f' ORDER BY 1, 2"),
    }


def test_schema_corpus_is_a_faithful_promotable_copy_under_load(make_group: Any) -> None:
    """The corpus and the bank, synced online to a real-time and a delayed standby, then streamed under load:
    verify equal and nothing a promotion would lack, after sync and after streaming; then the standbys take
    inserts into every serial and identity table as a promoted primary would (no duplicate key)."""
    group: Group = make_group(standbys=[("standby", 0.0), ("late", 3.0)], tables=("public.*", "Billing.*"))
    create_bank(group.primary_dsn, accounts=100)
    create_corpus(group.primary_dsn, rows=40)
    tables = BANK + TABLES
    started = time.monotonic()
    for name in ("standby", "late"):
        out = group.ark_ok("sync", name)
        assert "schema from the primary" in out and "sequences set to the primary's values" in out, out
        print(out)
    print(f"two syncs of the corpus: {time.monotonic() - started:.1f} s")
    for name in ("standby", "late"):
        assert _objects(group.standby(name).dsn) == _objects(group.primary_dsn)
        _assert_promotable(group, name)  # the primary is quiet: rows and sequences match right after sync

    group.start("capture")
    group.start("apply", "standby")
    group.start("apply", "late", name="apply-late")
    bank = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    corpus = CorpusWriter(group.primary_dsn).start()
    try:
        wait_for(lambda: corpus.committed >= 150, 120, "150 corpus transactions under load", interval=0.5)
    finally:
        transfers, written = bank.stop(), corpus.stop()
    assert not corpus.errors and bank.errors == 0, (corpus.errors[:3], bank.errors)
    for name in ("standby", "late"):
        _equal(group, name, tables, timeout=120)
        res = group.ark("verify", name, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        _assert_promotable(group, name, timeout=60)
    print(f"streamed {transfers} transfers and {written} corpus transactions")

    group.stop_all()
    keys = {}
    for name in ("standby", "late"):
        keys[name] = promote_by_hand(group.standby(name).dsn)  # raises on a duplicate key
    for table, key in keys["standby"].items():
        schema, _, rel = table.partition(".")
        column = '"Id"' if rel == "Invoice" else "id"
        (top,) = sql(group.primary_dsn, f'SELECT max({column}) FROM "{schema}"."{rel}"')[0]
        assert key > top, f"{table}: the promoted standby handed out {key}, the primary already used up to {top}"


#: DDL the application runs on the corpus while the capture is down and the writers keep writing (each one
#: followed by more writes): an enum value used at once, a column added, indexed, widened (no rewrite) and
#: renamed, a new serial table with a foreign key and rows, a standalone sequence.
PAUSED_DDL = [
    "ALTER TYPE \"Billing\".\"Currency\" ADD VALUE 'GBP'",
    'INSERT INTO "Billing"."Invoice" ("Customer", "Amount", "Currency") SELECT max(id), 9.5, \'GBP\' FROM customers',
    "ALTER TABLE customers ADD COLUMN nickname varchar(20) DEFAULT 'none'",
    "CREATE INDEX customers_nickname ON customers (nickname)",
    "ALTER TABLE customers ALTER COLUMN nickname TYPE varchar(40)",
    "ALTER TABLE orders ADD COLUMN remark text",
    "ALTER TABLE orders RENAME COLUMN remark TO note",
    "CREATE TABLE notes (id bigserial PRIMARY KEY, customer_id integer REFERENCES customers (id), "
    "body text NOT NULL, currency \"Billing\".\"Currency\" NOT NULL DEFAULT 'GBP')",
    "INSERT INTO notes (customer_id, body) SELECT id, 'note ' || id FROM customers ORDER BY id LIMIT 20",
    "CREATE SEQUENCE ticket_numbers START 500",
    "INSERT INTO notes (customer_id, body) SELECT max(id), 'ticket ' || nextval('ticket_numbers') FROM customers",
]


def _applied_offset(dsn: str) -> int:
    try:
        return int(sql(dsn, "SELECT next_offset FROM ark.apply_state")[0][0])
    except (psycopg.Error, IndexError):
        return -1


def test_corpus_with_ddl_while_the_capture_is_down_and_kills_is_faithful_and_promotable(make_group: Any) -> None:
    """Issue 9's second corpus case: the capture is killed (-9) and stays down while the application changes the
    schema and both writers keep writing; it resumes behind all of it, and each applier is killed (-9) in the
    middle of catching up. A real-time and a 5 s delayed standby end equal (``ark verify``) and promotable."""
    group: Group = make_group(standbys=[("standby", 0.0), ("late", 5.0)], tables=("public.*", "Billing.*"))
    create_bank(group.primary_dsn, accounts=100)
    create_corpus(group.primary_dsn, rows=20)
    for name in ("standby", "late"):
        group.ark_ok("sync", name)
    capture = group.start("capture")
    appliers = {"standby": group.start("apply", "standby"), "late": group.start("apply", "late", name="apply-late")}
    bank = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    corpus = CorpusWriter(group.primary_dsn).start()
    started = time.monotonic()
    try:
        for name in ("standby", "late"):  # both streaming before the fault
            wait_for(lambda n=name: _applied_offset(group.standby(n).dsn) > 0, 90, f"{name} to apply a first entry")
        capture.kill9()
        for statement in PAUSED_DDL:
            before = corpus.committed
            sql(group.primary_dsn, f"SET lock_timeout = '20s'; {statement}")
            wait_for(lambda b=before: corpus.committed >= b + 3, 60, "the writers to write after the DDL", 0.05)
        down = time.monotonic()
        capture.start()
        for name, agent in appliers.items():  # kill -9 of each applier once it has applied past the DDL's start
            dsn = group.standby(name).dsn
            mark = _applied_offset(dsn)
            wait_for(lambda d=dsn, m=mark: _applied_offset(d) > m, 120, f"{name} to apply while catching up")
            agent.kill9()
            agent.start()
        more = corpus.committed + 50  # the restarted appliers catch up under load
        wait_for(lambda: corpus.committed >= more, 120, "50 more corpus transactions under load", interval=0.5)
    finally:
        transfers, written = bank.stop(), corpus.stop()
    assert not corpus.errors and bank.errors == 0, (corpus.errors[:3], bank.errors)
    for name in ("standby", "late"):
        _equal(group, name, [*BANK, *TABLES, "public.notes"], timeout=180)
        res = group.ark("verify", name, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        _assert_promotable(group, name, timeout=60)
        assert _objects(group.standby(name).dsn) == _objects(group.primary_dsn)
    print(f"streamed {transfers} transfers and {written} corpus transactions; capture down for "
          f"{down - started:.1f} s of DDL, {time.monotonic() - down:.1f} s to the end")


def test_enum_and_domain_columns_replicate_and_both_standbys_keep_running(make_group: Any) -> None:
    """Issue 9, "Why": a table with an enum and a domain column stopped both standbys. Here one exists at sync
    and one is created mid-stream (its types exist): both standbys apply both, and keep running."""
    group: Group = make_group(standbys=[("standby", 0.0), ("other", 0.0)])
    sql(group.primary_dsn, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); "
                           "CREATE DOMAIN pos AS integer CHECK (VALUE > 0); "
                           "CREATE TYPE \"Weird Mood\" AS ENUM ('x', 'y'); "
                           "CREATE TABLE feelings (id serial PRIMARY KEY, m mood NOT NULL, p pos, w \"Weird Mood\")")
    sql(group.primary_dsn, "INSERT INTO feelings (m, p, w) VALUES ('ok', 1, 'x')")
    for name in ("standby", "other"):
        group.ark_ok("sync", name)
    group.start("capture")
    group.start("apply", "standby")
    group.start("apply", "other", name="apply-other")
    sql(group.primary_dsn, "CREATE TABLE later (id int PRIMARY KEY, m mood, p pos, ms mood[], w \"Weird Mood\")")
    for i in range(2, 6):
        sql(group.primary_dsn, "INSERT INTO feelings (m, p, w) VALUES ('happy', %s, 'y')", (i,))
        sql(group.primary_dsn, "INSERT INTO later VALUES (%s, 'sad', %s, '{ok,happy}', 'x')", (i, i))
    sql(group.primary_dsn, "UPDATE feelings SET m = 'sad' WHERE id = 1")
    for name in ("standby", "other"):
        _equal(group, name, ["public.feelings", "public.later"])
    group.assert_agents_alive()
    standby = group.standby("standby").dsn
    assert sql(standby, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                        "'later'::regclass AND attnum > 0 ORDER BY attnum") == [
        ("integer",), ("mood",), ("pos",), ("mood[]",), ('"Weird Mood"',)]


def test_a_partitioned_table_arrives_as_its_parent(make_group: Any) -> None:
    """Issue 9, "Why": a partitioned table arrived as its leaf partitions and the parent stayed empty. The
    standby gets the same layout; rows reach the partitioned table (routed to the same partitions); a partition
    added mid-stream loses no row: the standby stops on its first row (no partition for it), and the table
    resync (on_data_error: resync-table) creates the partition and copies the rows."""
    group: Group = make_group()
    group.standby_extra = {"on_data_error": "resync-table"}
    group.write_config()
    sql(group.primary_dsn, "CREATE TABLE m (id bigserial, at date NOT NULL, v text, PRIMARY KEY (id, at)) "
                           "PARTITION BY RANGE (at); "
                           "CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); "
                           "CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    sql(group.primary_dsn, "INSERT INTO m (at, v) SELECT '2024-01-01'::date + g, 'v' || g "
                           "FROM generate_series(0, 500) g")
    group.ark_ok("sync", "standby")
    standby = group.standby("standby").dsn
    layout = "SELECT c.relname, count(*) FROM m JOIN pg_class c ON c.oid = m.tableoid GROUP BY 1 ORDER BY 1"
    assert sql(standby, layout) == sql(group.primary_dsn, layout) == [("m_2024", 366), ("m_2025", 135)]
    group.start("capture")
    group.start("apply", "standby")
    sql(group.primary_dsn, "INSERT INTO m (at, v) VALUES ('2025-06-01', 'streamed')")
    sql(group.primary_dsn, "UPDATE m SET at = '2024-06-01' WHERE v = 'v400'")  # moves between partitions
    wait_for(lambda: sql(standby, layout) == sql(group.primary_dsn, layout), 60, "rows routed as on the primary")
    assert sql(standby, "SELECT count(*) FROM ONLY m") == [(0,)]
    assert sql(standby, "SELECT pubviaroot FROM pg_publication") == []  # the standby holds no publication
    # Ark's publications (the main one, and the keyless policy's inserts-only one) publish via the root.
    assert sql(group.primary_dsn, "SELECT bool_and(pubviaroot) FROM pg_publication") == [(True,)]

    sql(group.primary_dsn, "CREATE TABLE m_2026 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    sql(group.primary_dsn, "INSERT INTO m (at, v) SELECT '2026-01-01'::date + g, 'new' FROM generate_series(0, 9) g")
    wait_for(lambda: sql(standby, layout) == sql(group.primary_dsn, layout), 120,
             "the new partition's rows, after the table resync")
    _equal(group, "standby", ["public.m"])
    _assert_promotable(group, "standby", timeout=60)


def test_check_promotable_names_what_is_missing_with_its_fix(make_group: Any) -> None:
    """Exit 31 and one line per missing object, with its fix; the fix works."""
    group: Group = make_group()
    sql(group.primary_dsn, "CREATE TYPE color AS ENUM ('red', 'green'); "
                           "CREATE TABLE paint (id serial PRIMARY KEY, c color, note text); "
                           "CREATE INDEX paint_note ON paint (note); "
                           "INSERT INTO paint (c) SELECT 'red' FROM generate_series(1, 20)")
    group.ark_ok("sync", "standby")
    standby = group.standby("standby").dsn
    rw = standby + " options='-c default_transaction_read_only=off'"  # the standby is read-only for others
    sql(rw, "DROP INDEX paint_note; ALTER TABLE paint ALTER COLUMN id DROP DEFAULT; "
            "SELECT setval('paint_id_seq', 3)")
    sql(group.primary_dsn, "ALTER TYPE color ADD VALUE 'blue'")
    res = group.ark("check", "--promotable", "standby")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == ExitCode.NOT_PROMOTABLE, out
    for expected in ("paint_note", "column public.paint.id", "type public.color",
                     "ALTER TYPE \"public\".\"color\" ADD VALUE 'blue' AFTER 'green'", "sequence public.paint_id_seq",
                     "SELECT setval('public.paint_id_seq', 20)", "error:", "fix:"):
        assert expected in out, (expected, out)
    sql(rw, "ALTER TYPE \"public\".\"color\" ADD VALUE 'blue' AFTER 'green'")
    sql(rw, "SELECT setval('public.paint_id_seq', 20)")
    sql(rw, "CREATE INDEX paint_note ON paint (note); "
            "ALTER TABLE paint ALTER COLUMN id SET DEFAULT nextval('paint_id_seq'::regclass)")
    _assert_promotable(group, "standby")


def test_privileges_are_copied_and_a_missing_role_is_left_out(make_group: Any) -> None:
    """GRANTs travel with the schema; one naming a role the standby's cluster lacks is left out, not fatal."""
    group: Group = make_group()
    both, primary_only = f"r_{group.name}_both", f"r_{group.name}_only"
    standby = group.standby("standby")
    for dsn in (group.primary_dsn, standby.dsn):
        sql(dsn, f"CREATE ROLE {both}")
    sql(group.primary_dsn, f"CREATE ROLE {primary_only}")
    sql(group.primary_dsn, f"CREATE TABLE shared (id int PRIMARY KEY); GRANT SELECT ON shared TO {both}; "
                           f"GRANT SELECT, INSERT ON shared TO {primary_only}")
    res = group.ark("sync", "standby")
    assert res.returncode == 0, res.stdout + res.stderr
    assert primary_only in res.stderr and "left out" in res.stderr, res.stderr
    assert sql(standby.dsn, f"SELECT has_table_privilege('{both}', 'public.shared', 'SELECT')") == [(True,)]
    for dsn in (group.primary_dsn, standby.dsn + " options='-c default_transaction_read_only=off'"):
        sql(dsn, f"DROP OWNED BY {both}; DROP ROLE {both}")
    sql(group.primary_dsn, f"DROP OWNED BY {primary_only}; DROP ROLE {primary_only}")

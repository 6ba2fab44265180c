"""Micro-benchmark of the PostgreSQL applier: one 1M-row UPDATE applied through ``apply_rows``.

The table is ``bench.t (id int primary key, a int, n numeric(12,2), s text)`` with N rows. The script
applies one source transaction that updates every row (all columns sent), the way the apply runner
would: either as one ``apply_rows`` call, or in chunks of ``--chunk`` rows (the capture's chunk size),
then commits with the state row. It prints seconds and rows/s, and checks the result.

    python bench/pg_apply_micro.py                 # starts a private PostgreSQL 15 (as user postgres)
    python bench/pg_apply_micro.py --dsn "host=... port=... dbname=... user=..."

Reference on this machine kind (../shared/notes/machine-facts.md): native logical replication applied
a 1M-row UPDATE about 18 s after its commit.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from common.engines.postgresql import PostgresStandby
from consumers.base import ApplyState
from consumers.postgresql.applier import PostgresApplier
from schemas.entries import Column, Op, RowChange, TableMeta

META = TableMeta("bench.t", (
    Column("id", "int32", "integer", nullable=False, key_position=1),
    Column("a", "int32", "integer"),
    Column("n", "decimal", "numeric(12,2)"),
    Column("s", "string", "text"),
), version="1")


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[dict[str, object]]:
    if dsn:
        yield dict(psycopg.conninfo.conninfo_to_dict(dsn))
        return
    from deploy.ports import free_port
    from deploy.postgres import PgInstance

    root = Path(tempfile.mkdtemp(prefix="ark-bench-", dir="/tmp"))
    root.chmod(0o755)
    inst = PgInstance(root / "pg", free_port())
    inst.init()
    inst.start()
    try:
        yield dict(psycopg.conninfo.conninfo_to_dict(inst.dsn()))
    finally:
        inst.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _changes(lo: int, hi: int, bump: int) -> list[RowChange]:
    return [RowChange("bench.t", Op.UPDATE, [i, i + bump, f"{i % 100000}.{bump % 100:02d}", f"row {i} v{bump}"])
            for i in range(lo, hi)]


def run(params: dict[str, object], rows: int, chunk: int, rounds: int) -> list[float]:
    """Load the table, then time ``rounds`` full-table UPDATE transactions; return their seconds."""
    settings = PostgresStandby(engine="postgresql", name="bench", host=str(params.get("host", "127.0.0.1")),
                               port=int(str(params.get("port", 5432))),
                               dbname=str(params.get("dbname", "postgres")), user=str(params.get("user", "postgres")))
    app = PostgresApplier(settings)
    app.prepare()
    app.begin()
    app.conn.execute("DROP TABLE IF EXISTS bench.t")
    app.apply_table_meta("bench", META, None)
    app.conn.execute("INSERT INTO bench.t SELECT g, g, (g %% 100000)::numeric, 'row ' || g "
                     "FROM generate_series(0, %s) g", [rows - 1])
    app.commit()
    app.conn.execute("VACUUM ANALYZE bench.t")
    metas = {META.table: META}
    times = []
    for r in range(1, rounds + 1):
        step = chunk or rows
        gen_s = 0.0
        t0 = time.monotonic()
        app.begin()
        for lo in range(0, rows, step):
            g0 = time.monotonic()
            changes = _changes(lo, min(rows, lo + step), r)
            gen_s += time.monotonic() - g0
            app.apply_rows(metas, changes, txn_id=f"bench-{r}", position=f"0/{r}")
        app.save_state(ApplyState("bench", "bench", "ark.bench.redo", 0, r, f"0/{r}", r.to_bytes(8, "big"),
                                  1, 0, int(time.time() * 1e6), r))
        app.commit()
        elapsed = time.monotonic() - t0 - gen_s
        times.append(elapsed)
        print(f"round {r}: {rows} rows, chunk {chunk or 'none'}: apply {elapsed:.2f} s "
              f"({rows / elapsed:,.0f} rows/s; building the RowChange objects took {gen_s:.2f} s, excluded)")
        row = app.conn.execute("SELECT count(*) FILTER (WHERE a = id + %s AND s = 'row ' || id || ' v' || %s) "
                               "FROM bench.t", [r, r]).fetchone()
        assert row is not None and row[0] == rows, f"check failed: {row}"
    app.close()
    return times


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", help="standby DSN (default: start a private PostgreSQL)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=5000, help="rows per apply_rows call (0 = one call)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    with _database(args.dsn) as params:
        times = run(params, args.rows, args.chunk, args.rounds)
    print(f"best {min(times):.2f} s for {args.rows} rows (native logical replication here: ~18 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``ark verify`` against real Kafka and PostgreSQL, with the bank workload running throughout.

Accounts 101..120 exist but the workload only moves money between 1..100, so damage done to them on
the standby stays put until verify repairs it (damage to a row the workload updates would stop the
applier with a data error first, which is a different test).
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import psycopg

from deploy.workload import BankWorkload, create_bank
from tests.support.replication import Group, sql, wait_for

BANK = ["public.accounts", "public.history"]
EXTRA_ID = 1_000_000_000


def _start(make_group: Any, delay: float = 0.0) -> tuple[Group, BankWorkload]:
    group = make_group(standbys=[("standby", delay)]) if delay else make_group()
    create_bank(group.primary_dsn, accounts=120)
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, pause_s=0.01).start()
    standby = group.standby("standby").dsn
    wait_for(lambda: sql(standby, "SELECT count(*) FROM history")[0][0] > 50, 60 + delay, "history on the standby")
    return group, workload


def _applier_running(group: Group) -> bool:
    res = group.ark("status", "--json")
    return res.returncode == 0 and any(
        s["name"] == "standby" and s["state"] in ("running", "delayed") for s in json.loads(res.stdout)["standbys"])


def _verify(group: Group, *args: str) -> tuple[int, dict[str, Any], str]:
    started = time.monotonic()
    res = group.ark("verify", "standby", "--json", *args, timeout=300)
    print(f"ark verify {' '.join(args)}: exit {res.returncode} in {time.monotonic() - started:.1f} s\n{res.stderr}")
    assert "Traceback" not in res.stderr, res.stderr
    doc = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res.returncode, doc, res.stderr


def _next_offset(dsn: str) -> int:
    return int(sql(dsn, "SELECT next_offset FROM ark.apply_state")[0][0])


def _holds(group: Group) -> list[tuple[float, float]]:
    log = (group.workdir / "logs" / "apply-standby.log").read_text()
    return [(float(a), float(b)) for a, b in re.findall(r"stopped ([\d.]+) s before P=\S+, held ([\d.]+) s", log)]


def test_verify_equal_while_writes_continue(make_group: Any) -> None:
    group, workload = _start(make_group)
    standby = group.standby("standby").dsn
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), _next_offset(standby)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(3):
            code, doc, _err = _verify(group, "--chunk-rows", "500")
            assert code == 0, doc
            assert doc["verdict"] == "equal"
            tables = {t["table"]: t for t in doc["tables"]}
            assert sorted(tables) == BANK
            assert tables["public.accounts"]["primary_rows"] == tables["public.accounts"]["standby_rows"] == 120
            assert tables["public.history"]["primary_rows"] == tables["public.history"]["standby_rows"] > 50
            assert tables["public.history"]["chunks"] >= 1
            print(f"verify at {doc['position']}: applier stopped {doc['applier_stopped_s']} s, held "
                  f"{doc['applier_held_s']} s (CLI side); {tables['public.history']['primary_rows']} history rows")
    finally:
        done.set()
        sampler.join()
    assert workload.committed > 0
    # The applier kept applying: its position advanced past every held position, and never stalled long.
    assert samples[-1][1] > doc["standby_next_offset"]
    stalls = [b[0] - a[0] for a, b in zip(samples, samples[1:], strict=False) if b[1] == a[1]]
    longest, run_start = 0.0, samples[0]
    for prev, cur in zip(samples, samples[1:], strict=False):
        if cur[1] != prev[1]:
            run_start = cur
        longest = max(longest, cur[0] - run_start[0])
    holds = _holds(group)
    print(f"applier holds (stop before P, hold at P) from its log: {holds}; longest position stall seen "
          f"{longest:.2f} s over {len(samples)} samples ({len(stalls)} unchanged intervals)")
    assert len(holds) == 3
    assert all(a + b < 2.0 for a, b in holds), holds
    workload.stop()
    assert all(d.equal for d in group.wait_equal("standby", BANK, timeout=120))


def _damage(dsn: str) -> list[int]:
    """As a superuser on the standby (past its read-only default): returns the deleted history ids."""
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM history ORDER BY id LIMIT 3 OFFSET 10").fetchall()]
        conn.execute("DELETE FROM history WHERE id = ANY(%s)", [ids])
        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 110")
        conn.execute("DELETE FROM accounts WHERE id = 115")
        conn.execute("INSERT INTO history (id, from_id, to_id, amount, at, note) VALUES (%s, 1, 2, 0, now(), 'forged')",
                     [EXTRA_ID])
    return ids


def test_verify_finds_and_repairs_damage(make_group: Any) -> None:
    group, workload = _start(make_group)
    standby = group.standby("standby").dsn
    time.sleep(1)
    deleted = _damage(standby)

    code, doc, _err = _verify(group, "--chunk-rows", "400", "--leaf-rows", "20")
    assert code == 11, doc
    assert doc["verdict"] == "different"
    tables = {t["table"]: t for t in doc["tables"]}
    acc = tables["public.accounts"]["ranges"]
    assert [k for r in acc for k in r["missing_on_standby"]] == ["115"]
    assert [k for r in acc for k in r["different"]] == ["110"]
    assert [k for r in acc for k in r["extra_on_standby"]] == []
    hist = tables["public.history"]["ranges"]
    assert [k for r in hist for k in r["missing_on_standby"]] == [str(i) for i in deleted]
    assert [k for r in hist for k in r["extra_on_standby"]] == [str(EXTRA_ID)]
    assert [k for r in hist for k in r["different"]] == []
    assert all(max(r["primary_rows"], r["standby_rows"]) <= 20 for r in hist), hist  # bisected to leaves
    assert tables["public.history"]["primary_rows"] - tables["public.history"]["standby_rows"] == len(deleted) - 1

    res = group.ark("verify", "standby", "--chunk-rows", "400", "--leaf-rows", "20")  # the human report
    print(res.stdout)
    assert res.returncode == 11 and "missing on standby: 115" in res.stdout and "different: 110" in res.stdout
    assert f"extra on standby: {EXTRA_ID}" in res.stdout and "verdict: different" in res.stdout

    code, doc, _err = _verify(group, "--repair", "--chunk-rows", "400", "--leaf-rows", "20")
    assert code == 0, doc
    repaired = doc["repair"]["ranges"]
    assert sorted(k for r in repaired for k in r["keys"]) == sorted(["110", "115", str(EXTRA_ID),
                                                                    *map(str, deleted)])
    assert sum(r["deleted"] for r in repaired) == 1 and sum(r["inserted"] for r in repaired) == 4
    assert sum(r["rewritten"] for r in repaired) == 1
    print(f"repair held the applier {doc['repair']['held_s']} s")
    assert doc["repair"]["held_s"] < 5

    code, doc, _err = _verify(group)
    assert code == 0 and doc["verdict"] == "equal", doc

    # The standby goes on replicating, and ends equal row by row.
    before = _next_offset(standby)
    wait_for(lambda: _next_offset(standby) > before, 30, "the applier to go on after the repair")
    workload.stop()
    diffs = group.wait_equal("standby", BANK, timeout=120)
    assert all(d.equal for d in diffs), diffs
    group.assert_agents_alive()
    print(f"holds from the applier's log: {_holds(group)}")


def test_verify_table_filter_unique_key_and_table_without_key(make_group: Any) -> None:
    group = make_group()
    create_bank(group.primary_dsn, accounts=20)
    # No primary key but a unique index on NOT NULL columns: the stream's key, so verify compares by it too.
    sql(group.primary_dsn, "CREATE TABLE uniq (a int NOT NULL UNIQUE, b text)")
    sql(group.primary_dsn, "ALTER TABLE uniq REPLICA IDENTITY FULL")
    sql(group.primary_dsn, "INSERT INTO uniq VALUES (1, 'x'), (2, 'y')")
    # No unique key at all (FULL identity, duplicate rows): compared as a multiset of rows.
    sql(group.primary_dsn, "CREATE TABLE bag (a int, b text, j json)")
    sql(group.primary_dsn, "ALTER TABLE bag REPLICA IDENTITY FULL")
    sql(group.primary_dsn, "INSERT INTO bag SELECT mod(g, 7), 'v' || mod(g, 3), '{\"k\": 1}' "
                           "FROM generate_series(1, 300) g")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    wait_for(lambda: _applier_running(group), 60, "the applier's heartbeat", interval=1.0)
    # Changes by the identity: one row of each duplicate group, after the sync.
    sql(group.primary_dsn, "DELETE FROM bag WHERE ctid IN (SELECT min(ctid) FROM bag GROUP BY a, b)")
    sql(group.primary_dsn, "UPDATE bag SET b = 'changed' WHERE ctid IN (SELECT max(ctid) FROM bag GROUP BY a, b)")
    standby = group.standby("standby").dsn
    wait_for(lambda: sql(standby, "SELECT count(*) FROM bag WHERE b = 'changed'")[0][0] == 21, 60,
             "the keyless table's changes on the standby")

    # A light workload on the bank tables throughout: a source with commits gives the hold protocol its position
    # at once, where an idle one only gives it with its next checkpoint (up to 10 s per verify).
    workload = BankWorkload(group.primary_dsn, accounts=20, clients=1, pause_s=0.05).start()
    try:
        # The filter: the three tables named and nothing else (history is replicated too, and left out).
        code, doc, _err = _verify(group, "--table", "accounts", "--table", "uniq", "--table", "bag")
        assert code == 0, doc
        assert [t["table"] for t in doc["tables"]] == ["public.accounts", "public.bag", "public.uniq"]
        assert {t["table"]: t["primary_rows"] for t in doc["tables"]} == {"public.accounts": 20, "public.uniq": 2,
                                                                         "public.bag": 279}

        # Damage the keyless table on the standby (the applier only touches it when the primary changes it).
        with psycopg.connect(standby, autocommit=True, options="-c default_transaction_read_only=off") as conn:
            conn.execute("DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE b = 'changed')")
            conn.execute("INSERT INTO bag VALUES (99, 'extra', NULL)")
        # One run finds (its report is the compare's, before the repair) and repairs.
        code, doc, _err = _verify(group, "--table", "bag", "--leaf-rows", "50", "--repair")
        assert code == 0, doc
        assert doc["verdict"] == "different", doc
        (table,) = doc["tables"]
        assert sum(b["missing_on_standby"] for b in table["buckets"]) == 1
        assert sum(b["extra_on_standby"] for b in table["buckets"]) == 1
        assert doc["repair"]["ranges"] and all(r["table"] == "public.bag" for r in doc["repair"]["ranges"]), doc
        code, doc, _err = _verify(group, "--table", "bag")
        assert code == 0 and doc["verdict"] == "equal" and doc["tables"][0]["standby_rows"] == 279, doc
    finally:
        workload.stop()

    res = group.ark("verify", "standby", "--table", "nosuch")
    assert res.returncode == 1 and "error: table public.nosuch is not replicated" in res.stderr, res.stderr
    assert "fix:" in res.stderr and "Traceback" not in res.stderr


def test_verify_delayed_standby(make_group: Any) -> None:
    group, workload = _start(make_group, delay=4.0)
    code, doc, err = _verify(group)
    assert code == 0, doc
    assert "delay of 4 s" in err
    assert doc["verdict"] == "equal"
    workload.stop()


def test_verify_refuses_without_a_running_applier(make_group: Any) -> None:
    group = make_group()
    create_bank(group.primary_dsn, accounts=5)
    group.ark_ok("sync", "standby")
    res = group.ark("verify", "standby")
    assert res.returncode == 1 and "is not running" in res.stderr and "ark apply standby" in res.stderr, res.stderr

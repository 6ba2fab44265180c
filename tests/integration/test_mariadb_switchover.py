"""``ark switchover`` between two MariaDB nodes, and back, while an application writes.

Two fresh MariaDB 10.11 servers, ``ark sync``, one ``ark capture`` and an ``ark apply`` per node (the primary's
waits while it is the primary). A writer, as an application user of its own (no READ_ONLY ADMIN: ``read_only``
binds it), makes transfers through a "whichever node is writable" connection and keeps its own log of
acknowledged commits (each inserts a row with a unique seq into an AUTO_INCREMENT table, so the new primary's
counter is exercised at once). ``ark switchover standby`` runs while it writes; then ``ark switchover primary``.

Checked after each switch: the writer goes on on the new primary; every acknowledged commit is there; the old
primary is read-only and applies from the end-of-epoch marker; both nodes are equal row by row; the balance
total is the invariant on both; no AUTO_INCREMENT value was handed out twice (no duplicate key on the new
primary; a counter the old primary moved past its rows, with a rolled-back insert, is carried forward). The
write downtime the application saw (last acknowledged commit on the old primary to the first on the new one) is
reported with the switchover's own phase times.
"""

from __future__ import annotations

import collections
import threading
import time
from decimal import Decimal
from typing import Any

import pymysql
import pytest

from deploy.mariadb import MariaDBInstance
from tests.support.handover import divergence_seqs
from tests.support.mariadb import MariaDBGroup, connect, create_bank, query, total_balance

SCHEMA = "bank"
TABLES = [f"{SCHEMA}.{t}" for t in ("accounts", "history", "acks", "tickets")]
APP_USER, APP_PASSWORD = "app", "app-secret"


class SwitchWriter:
    """Transfers on whichever node accepts writes, as the application user; a log of acknowledged commits."""

    def __init__(self, nodes: list[MariaDBInstance], accounts: int) -> None:
        self.nodes, self.accounts = nodes, accounts
        #: seq -> (port, monotonic time of the acknowledgement)
        self.acked: dict[int, tuple[int, float]] = {}
        self.errors: collections.Counter[int] = collections.Counter()
        #: (what, monotonic time) marks for diagnostics
        self.marks: list[tuple[str, float]] = []
        self._seq = 0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="switch-writer", daemon=True)

    def start(self) -> SwitchWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def pause(self) -> None:
        """Hold the writer between transactions (the nodes can then be compared row by row)."""
        self._paused.set()
        time.sleep(0.5)  # a transaction under way finishes: the comparison waits for equality anyway

    def resume(self) -> None:
        self._paused.clear()

    def acked_on(self, port: int) -> int:
        with self._lock:
            return sum(1 for p, _t in self.acked.values() if p == port)

    def acked_seqs(self) -> set[int]:
        with self._lock:
            return set(self.acked)

    def last_on(self, port: int) -> float:
        with self._lock:
            return max((t for p, t in self.acked.values() if p == port), default=0.0)

    def first_on_after(self, port: int, since: float) -> float:
        with self._lock:
            return min((t for p, t in self.acked.values() if p == port and t >= since), default=0.0)

    def _writable(self) -> tuple[Any, int] | None:
        for inst in self.nodes:
            try:
                conn = pymysql.connect(**{**inst.connect_kwargs(), "user": APP_USER, "password": APP_PASSWORD},
                                       connect_timeout=2, read_timeout=10, write_timeout=10)
            except pymysql.err.Error:
                continue
            with conn.cursor() as cur:
                cur.execute("SELECT @@global.read_only")
                if str(cur.fetchone()[0]) in ("0", "OFF"):
                    return conn, inst.port
            conn.close()
        return None

    def _run(self) -> None:
        conn, port = None, 0
        n = 0
        while not self._stop.is_set():
            if self._paused.is_set():
                time.sleep(0.05)
                continue
            if conn is None:
                found = self._writable()
                if found is None:
                    time.sleep(0.02)
                    continue
                conn, port = found
            n += 1
            a, b = 1 + n % self.accounts, 1 + (n * 7 + 3) % self.accounts
            if a == b:
                b = 1 + b % self.accounts
            amount = Decimal(n % 500 + 1) / 100
            self._seq += 1
            seq = self._seq
            try:
                with conn.cursor() as cur:
                    cur.execute(f"UPDATE {SCHEMA}.accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                    cur.execute(f"UPDATE {SCHEMA}.accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                    cur.execute(f"INSERT INTO {SCHEMA}.acks (seq, port) VALUES (%s, %s)", (seq, port))
                conn.commit()
            except pymysql.err.Error as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
                self.errors[code] += 1
                self.marks.append((f"error {code} on {port} at seq {seq}", time.monotonic()))
                try:
                    conn.close()
                except pymysql.err.Error:
                    pass
                conn = None
                continue
            with self._lock:
                self.acked[seq] = (port, time.monotonic())
        if conn is not None:
            conn.close()


def _wait(what: str, done: Any, timeout: float, group: MariaDBGroup) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        group.assert_agents_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _app_user(inst: MariaDBInstance) -> None:
    for host in ("'%'", "'localhost'"):
        inst.sql(f"CREATE USER IF NOT EXISTS {APP_USER}@{host} IDENTIFIED BY '{APP_PASSWORD}'; "
                 f"GRANT ALL ON `{SCHEMA}`.* TO {APP_USER}@{host}")


def _read_only(inst: MariaDBInstance) -> bool:
    return query(inst, "SELECT @@global.read_only")[0][0] == "1"


def _switch(group: MariaDBGroup, writer: SwitchWriter, target: str, old: MariaDBInstance,
            new: MariaDBInstance) -> tuple[str, float]:
    """Run ``ark switchover target`` under the writer; the output and the write downtime the writer saw."""
    since = time.monotonic()
    writer.marks.append((f"switchover {target} starts", since))
    out = group.ark_ok("switchover", target, "--grace", "2", timeout=240)
    writer.marks.append((f"switchover {target} ends", time.monotonic()))
    before = writer.acked_on(new.port)
    try:
        _wait(f"writes on the new primary {target}", lambda: writer.acked_on(new.port) >= before + 30, 60, group)
    except AssertionError as exc:
        tails = "\n".join(f"--- {' '.join(agent.args)}\n{agent.tail(30)}" for agent in group.agents)
        raise AssertionError(f"{exc}; writer errors {dict(writer.errors)}; read_only old {_read_only(old)}, new "
                             f"{_read_only(new)}\n{out}\n{tails}") from None
    last_old = writer.last_on(old.port)
    first_new = writer.first_on_after(new.port, since)
    assert last_old and first_new, (last_old, first_new)
    return out, first_new - last_old


def _check_group(group: MariaDBGroup, writer: SwitchWriter, primary: MariaDBInstance, standby: MariaDBInstance,
                 invariant: Decimal) -> None:
    acked = writer.acked_seqs()  # before the read: the writer goes on
    seqs = {int(r[0]) for r in query(primary, f"SELECT seq FROM {SCHEMA}.acks")}
    missing = acked - seqs
    if missing:
        on_standby = {int(r[0]) for r in query(standby, f"SELECT seq FROM {SCHEMA}.acks")}
        detail = [(seq, writer.acked[seq], seq in on_standby) for seq in sorted(missing)[:10]]
        raise AssertionError(f"acknowledged commits missing on the new primary {primary.port} (seq, (acked on port, "
                             f"at), on the other node): {detail}; switch times {writer.marks}")
    writer.pause()
    try:
        diffs = group.wait_equal(TABLES, timeout=120)
        assert diffs == {}, diffs
        assert total_balance(primary, SCHEMA) == invariant == total_balance(standby, SCHEMA)
        assert _read_only(standby) and not _read_only(primary)
    finally:
        writer.resume()


@pytest.mark.timeout(900)
def test_mariadb_switchover_there_and_back(mariadb_factory, kafka_bootstrap, unique_group, ark_tmp, request) -> None:
    a, b = mariadb_factory("swprimary"), mariadb_factory("swstandby")
    a.create_database(SCHEMA)
    for inst in (a, b):
        _app_user(inst)
    group = MariaDBGroup(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, a, b, SCHEMA)
    group.write_config()
    request.addfinalizer(group.stop_all)  # a failing step must not leave the agents running
    invariant = create_bank(a, SCHEMA, accounts=50)
    a.sql(f"CREATE TABLE `{SCHEMA}`.acks (id bigint AUTO_INCREMENT PRIMARY KEY, seq bigint NOT NULL UNIQUE, "
          f"port int NOT NULL); CREATE TABLE `{SCHEMA}`.tickets (id bigint AUTO_INCREMENT PRIMARY KEY, "
          f"note varchar(20) NOT NULL); INSERT INTO `{SCHEMA}`.tickets (note) VALUES "
          + ", ".join(f"('t{i}')" for i in range(10)))
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    group.start("apply", "primary")  # waits while its node is the primary; applies once it is a standby
    writer = SwitchWriter([a, b], accounts=50).start()
    notes: list[str] = []
    try:
        _wait("the writer's first commits", lambda: writer.acked_on(a.port) >= 50, 60, group)
        _wait("the standby to follow", lambda: int(query(b, f"SELECT COUNT(*) FROM {SCHEMA}.acks")[0][0]) >= 50,
              90, group)
        # The old primary hands out tickets 11..15 to a transaction that rolls back: InnoDB does not reuse them,
        # and the standby (explicit ids 1..10 applied) knows nothing of them: the switchover must carry them.
        conn = connect(a)
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"INSERT INTO {SCHEMA}.tickets (note) VALUES " + ", ".join(["('rolled back')"] * 5))
            cur.execute("ROLLBACK")
        conn.close()

        out, downtime = _switch(group, writer, "standby", a, b)
        notes.append(f"primary -> standby: write downtime {downtime:.2f} s")
        assert 0 < downtime < 60, downtime
        print(out)
        assert "done in" in out and "fenced" in out and "promoted" in out, out
        # The standby's tables have their AUTO_INCREMENT from the stream's shapes (redo_entry v6): nothing to create;
        # the switchover moves the counter past the old primary's (tickets: 16, past the rolled-back 11..15).
        assert "created on" not in out, out
        query(b, f"INSERT INTO {SCHEMA}.tickets (note) VALUES ('on b')")
        assert query(b, f"SELECT MAX(id) FROM {SCHEMA}.tickets")[0][0] == "16"
        _check_group(group, writer, b, a, invariant)

        out, downtime = _switch(group, writer, "primary", b, a)
        notes.append(f"standby -> primary: write downtime {downtime:.2f} s")
        assert 0 < downtime < 60, downtime
        print(out)
        assert "done in" in out, out
        query(a, f"INSERT INTO {SCHEMA}.tickets (note) VALUES ('on a')")
        assert query(a, f"SELECT MAX(id) FROM {SCHEMA}.tickets")[0][0] == "17"
        _wait("more writes on primary", lambda: writer.acked_on(a.port) >= 100, 60, group)
    finally:
        writer.stop()
    _check_group(group, writer, a, b, invariant)
    group.stop_all()
    notes.append(f"{len(writer.acked)} acknowledged commits; client errors by code {dict(writer.errors)}")
    print("\n".join(notes))
    assert 1062 not in writer.errors, f"an AUTO_INCREMENT value was handed out twice: {dict(writer.errors)}"


@pytest.mark.timeout(900)
def test_mariadb_failover_and_reinstate(mariadb_factory, kafka_bootstrap, unique_group, ark_tmp, request) -> None:
    """The primary's server is killed (-9) under the writer: ``ark failover standby`` promotes the standby (its
    capture starts where the promotion recorded); the old primary comes back, ``ark reinstate primary`` records
    what it committed that never reached Kafka, and it rejoins as a standby, equal row by row.

    What the failover cannot read from the dead primary comes from the stream: the writer's INSERTs leave the
    AUTO_INCREMENT id out (error 1364 on a standby whose tables lack it: the shapes carry it, redo_entry v6), and
    a SEQUENCE the primary used is past its values on the standby (SequenceValues, SETVAL forward only).
    ``ark check --promotable standby`` names what the stream does not carry (the sequence, a secondary index)."""
    a, b = mariadb_factory("foprimary"), mariadb_factory("fostandby")
    a.create_database(SCHEMA)
    for inst in (a, b):
        _app_user(inst)
    group = MariaDBGroup(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, a, b, SCHEMA)
    group.write_config()
    request.addfinalizer(group.stop_all)  # a failing step must not leave the agents running
    invariant = create_bank(a, SCHEMA, accounts=50)
    a.sql(f"CREATE TABLE `{SCHEMA}`.acks (id bigint AUTO_INCREMENT PRIMARY KEY, seq bigint NOT NULL UNIQUE, "
          f"port int NOT NULL); CREATE TABLE `{SCHEMA}`.tickets (id bigint AUTO_INCREMENT PRIMARY KEY, "
          f"note varchar(20) NOT NULL)")
    sequence = f"CREATE SEQUENCE `{SCHEMA}`.ticket_no NOCACHE"  # NOCACHE: every NEXTVAL is in the binlog
    a.sql(sequence)
    group.ark_ok("sync", "standby")
    check = group.ark("check", "--promotable", "standby")
    print(check.stdout)
    assert check.returncode == 32, check.stdout + check.stderr
    assert f"sequence {SCHEMA}.ticket_no: missing" in check.stdout, check.stdout  # ark sync copies tables only
    assert f"index {SCHEMA}.acks.seq:" in check.stdout, check.stdout  # the stream carries no secondary index
    assert "AUTO_INCREMENT" not in check.stdout, check.stdout  # the synced tables have it
    b.sql(sequence)  # the fix the check gives (a DBA's step): from here the stream keeps its value
    group.start("capture")
    group.start("apply", "standby")
    group.start("apply", "primary")
    # A table the standby gets from the stream alone (created after the sync): its shape says AUTO_INCREMENT.
    a.sql(f"CREATE TABLE `{SCHEMA}`.notes (id bigint AUTO_INCREMENT PRIMARY KEY, note varchar(20) NOT NULL); "
          f"INSERT INTO `{SCHEMA}`.notes (note) VALUES ('before')")
    _wait("the standby's notes table, AUTO_INCREMENT", lambda: query(
        b, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'notes' AND "
           "COLUMN_NAME = 'id' AND EXTRA LIKE '%%auto_increment%%'", (SCHEMA,))[0][0] == "1", 60, group)
    writer = SwitchWriter([a, b], accounts=50).start()
    try:
        _wait("the writer's first commits", lambda: writer.acked_on(a.port) >= 100, 60, group)
        handed_out = [int(query(a, f"SELECT NEXTVAL({SCHEMA}.ticket_no)")[0][0]) for _ in range(30)]
        _wait("the standby to follow", lambda: int(query(b, f"SELECT COUNT(*) FROM {SCHEMA}.acks")[0][0]) >= 50,
              90, group)
        _wait("the sequence's value on the standby", lambda: int(query(
            b, f"SELECT next_not_cached_value FROM {SCHEMA}.ticket_no")[0][0]) > max(handed_out), 60, group)
        a.kill9()
        out = group.ark_ok("failover", "standby", "--force", timeout=300)
        print(out)
        assert "done in" in out, out
        before = writer.acked_on(b.port)
        _wait("writes on the new primary", lambda: writer.acked_on(b.port) >= before + 50, 60, group)
        assert 1364 not in writer.errors, f"an INSERT leaving the id out failed on the new primary: {writer.errors}"
        first = int(query(b, f"SELECT NEXTVAL({SCHEMA}.ticket_no)")[0][0])
        assert first == max(handed_out) + 1, f"the new primary's sequence gives {first} after {handed_out}"
        b.sql(f"INSERT INTO `{SCHEMA}`.notes (note) VALUES ('after')")
        assert [r[0] for r in query(b, f"SELECT id FROM {SCHEMA}.notes ORDER BY id")] == ["1", "2"]
    finally:
        writer.stop()  # the restarted old primary is writable until reinstate fences it: no application on it
    a.start()
    out = group.ark_ok("reinstate", "primary", "--report", str(group.workdir / "divergence.txt"), timeout=600)
    print(out)
    acked_on_a = {seq for seq, (port, _t) in writer.acked.items() if port == a.port}
    on_b = {int(r[0]) for r in query(b, f"SELECT seq FROM {SCHEMA}.acks")}
    never_in_kafka = acked_on_a - on_b
    ledger = divergence_seqs(group, f"{SCHEMA}.acks")
    assert never_in_kafka <= ledger, f"acknowledged, not on the new primary, not in the ledger: {never_in_kafka}"
    assert {seq for seq, (port, _t) in writer.acked.items() if port == b.port} <= on_b
    diffs = group.wait_equal([*TABLES, f"{SCHEMA}.notes"], timeout=180)
    assert diffs == {}, diffs
    assert total_balance(b, SCHEMA) == invariant == total_balance(a, SCHEMA)
    assert _read_only(a) and not _read_only(b)
    group.stop_all()
    print(f"failover: {len(writer.acked)} acknowledged commits, {len(never_in_kafka)} acknowledged on the old "
          f"primary but never in Kafka, ledger {len(ledger)} transactions; client errors {dict(writer.errors)}")

"""The bank workload: concurrent transfers that keep a fixed total balance, plus a history ledger.

Used by the demo, the integration and fault tests and the benchmarks. Every transfer is one
transaction: two balance updates and one history insert with a unique id. So at any consistent
point the total balance equals ``accounts * INITIAL_BALANCE``, and the history ids are unique.

With ``ledger=True`` (the fault suite) every transfer also numbers itself in commit order: its last
step before COMMIT takes the next value of the one-row counter ``ark_ledger_seq`` (only the history
insert that stores it in ``history.seq`` follows). The counter's row lock is held until COMMIT, so the
next transfer gets its number only after this one committed: seq order is exactly commit order, with
no gaps. A standby that applies whole transactions in commit order always holds exactly ``1..k``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

log = logging.getLogger(__name__)

INITIAL_BALANCE = Decimal("1000.00")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS accounts (
    id integer PRIMARY KEY,
    balance numeric(14,2) NOT NULL,
    owner text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE IF NOT EXISTS history_id_seq;
CREATE TABLE IF NOT EXISTS history (
    id bigint PRIMARY KEY DEFAULT nextval('history_id_seq'),
    from_id integer NOT NULL,
    to_id integer NOT NULL,
    amount numeric(14,2) NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    note text
);
"""

LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS ark_ledger_seq (
    id integer PRIMARY KEY CHECK (id = 1),
    n bigint NOT NULL
);
INSERT INTO ark_ledger_seq (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
ALTER TABLE history ADD COLUMN IF NOT EXISTS seq bigint UNIQUE;
"""

#: The ledger step: the last statement of a transfer (see the module docstring).
NEXT_SEQ_SQL = "UPDATE ark_ledger_seq SET n = n + 1 WHERE id = 1 RETURNING n"


def create_bank(dsn: str, accounts: int = 100, ledger: bool = False) -> Decimal:
    """Create and fill the bank tables (idempotent); returns the invariant total.

    ``ledger`` also creates the commit-order counter and the ``history.seq`` column.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        if ledger:
            conn.execute(LEDGER_SQL)
        existing = {r[0] for r in conn.execute("SELECT id FROM accounts").fetchall()}
        with conn.cursor() as cur, cur.copy("COPY accounts (id, balance, owner) FROM STDIN") as copy:
            for i in range(1, accounts + 1):
                if i not in existing:
                    copy.write_row((i, INITIAL_BALANCE, f"owner-{i:05d} ünïcode"))
    return INITIAL_BALANCE * accounts


def total_balance(dsn: str) -> Decimal:
    """SUM(balance) in one statement (one consistent snapshot)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(balance), 0) FROM accounts").fetchone()
    return Decimal(row[0]) if row else Decimal(0)


@dataclass
class BankWorkload:
    """Runs ``clients`` threads of transfers against ``dsn`` until :meth:`stop`."""

    dsn: str
    accounts: int = 100
    clients: int = 4
    pause_s: float = 0.0
    ledger: bool = False
    committed: int = 0
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> BankWorkload:
        """Start the client threads."""
        for n in range(self.clients):
            t = threading.Thread(target=self._client, args=(n,), name=f"bank-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> int:
        """Stop and join; returns the number of committed transfers."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.committed

    def run_for(self, seconds: float) -> int:
        """Start, run ``seconds``, stop."""
        self.start()
        time.sleep(seconds)
        return self.stop()

    def _client(self, n: int) -> None:
        rnd = random.Random(n * 7919 + int(time.time()))

        def transfer(conn: Any) -> None:
            with conn.transaction():
                a, b, amount = move_money(conn, rnd, self.accounts)
                if self.ledger:
                    # The counter is taken last (only the history insert follows): its row lock, held
                    # until COMMIT, orders the commits, and holding it briefly keeps clients concurrent.
                    seq = conn.execute(NEXT_SEQ_SQL).fetchone()[0]
                    conn.execute("INSERT INTO history (from_id, to_id, amount, note, seq) "
                                 "VALUES (%s, %s, %s, %s, %s)", (a, b, amount, f"transfer {n}", seq))
                else:
                    conn.execute("INSERT INTO history (from_id, to_id, amount, note) VALUES (%s, %s, %s, %s)",
                                 (a, b, amount, f"transfer {n}"))
            with self._lock:
                self.committed += 1

        def failed(exc: psycopg.Error) -> None:
            with self._lock:
                self.errors += 1
            log.debug("bank client %d: %s", n, exc)

        client_loop(self.dsn, self._stop, transfer, failed, error_pause_s=0.2, pause_s=self.pause_s)


def move_money(conn: Any, rnd: random.Random, accounts: int) -> tuple[int, int, Decimal]:
    """In the caller's transaction: move a random amount between two random accounts (returned as from, to,
    amount), locking them in id order so that concurrent clients never deadlock."""
    a, b = rnd.sample(range(1, accounts + 1), 2)
    amount = Decimal(rnd.randint(1, 5000)) / 100
    for acc, delta in sorted(((a, -amount), (b, amount))):
        conn.execute("UPDATE accounts SET balance = balance + %s, updated_at = now() WHERE id = %s", (delta, acc))
    return a, b, amount


def client_loop(dsn: str, stop: threading.Event, transaction: Callable[[Any], None],
                failed: Callable[[psycopg.Error], None], *, error_pause_s: float, pause_s: float = 0.0) -> None:
    """One client thread: run ``transaction(conn)`` again and again until ``stop``, on a connection opened on
    demand. A database error goes to ``failed``; the connection is dropped (the next turn reconnects, which
    is how a client follows a switchover) and the loop waits ``error_pause_s`` before going on."""
    conn: Any = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn)
            transaction(conn)
        except psycopg.Error as exc:
            failed(exc)
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(error_pause_s)
        if pause_s:
            time.sleep(pause_s)
    if conn is not None:
        conn.close()

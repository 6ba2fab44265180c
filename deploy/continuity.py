"""A client that follows the primary and keeps its own log of acknowledged commits: the switchover and
failover fault cases (F16, F17) and bench/continuity.py measure with it.

:class:`AckClient` runs the ledger bank's transfers through ONE connection string that lists every node with
``target_session_attrs=read-write`` (libpq tries the hosts in order and keeps the first that takes writes),
the way an application rides through a switchover. A transfer counts as acknowledged only when its COMMIT
returned; its ledger seq goes into the client's log with the time and the server that took it. The history
id is taken with an explicit ``nextval('history_id_seq')`` and ``at`` is given: a standby has no column
defaults yet (README, "DDL on the primary"; the faithful-standby issue restores them), and the sequence must
have been carried over by the switchover for the ids not to collide.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from deploy.postgres import PgInstance
from deploy.workload import NEXT_SEQ_SQL, client_loop, move_money


def multi_host_dsn(nodes: list[tuple[PgInstance, str]], *, connect_timeout: int = 2) -> str:
    """One libpq DSN naming every node, for a client that writes wherever the primary is."""
    hosts = ",".join("127.0.0.1" for _ in nodes)
    ports = ",".join(str(inst.port) for inst, _db in nodes)
    dbname = nodes[0][1]
    return (f"host={hosts} port={ports} dbname={dbname} user=postgres target_session_attrs=read-write "
            f"connect_timeout={connect_timeout}")


@dataclass
class Ack:
    """One acknowledged transfer."""

    seq: int
    at: float
    port: int
    #: What :attr:`AckClient.identify_sql` said about the server ('' without it).
    server: str = ""


@dataclass
class AckClient:
    """``clients`` threads of ledger transfers through a multi-host DSN (see the module docstring)."""

    dsn: str
    accounts: int = 100
    clients: int = 3
    #: Where history ids come from: ``sequence`` (``nextval('history_id_seq')``: the new primary's sequence must
    #: have been carried over) or ``ledger`` (the id is the ledger seq: a measurement that must not depend on it).
    ids: str = "sequence"
    #: A query whose one value names the server, run in each transfer (e.g. ``SELECT current_setting('cluster_name')``):
    #: behind a service address every node has the same host and port, so these cannot tell them apart.
    identify_sql: str = ""
    #: Seconds each client thread waits after each transfer (0: as fast as it can); a case that must not outrun a
    #: capture on a busy machine sets it.
    pause_s: float = 0.0
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    #: Client errors by their first line (without values), for a failing case's message.
    error_kinds: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> AckClient:
        """Start the client threads."""
        for n in range(self.clients):
            t = threading.Thread(target=self._run, args=(n,), name=f"ack-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop and join."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def count(self) -> int:
        """Acknowledged transfers so far."""
        with self._lock:
            return len(self.acks)

    def acked_on(self, port: int) -> int:
        """Acknowledged transfers taken by the server on ``port``."""
        with self._lock:
            return sum(1 for a in self.acks if a.port == port)

    def acks_on(self, port: int) -> list[Ack]:
        """The acknowledged transfers taken by the server on ``port``."""
        with self._lock:
            return [a for a in self.acks if a.port == port]

    def acks_from(self, server: str) -> list[Ack]:
        """The acknowledged transfers taken by ``server`` (as :attr:`identify_sql` names it)."""
        with self._lock:
            return [a for a in self.acks if a.server == server]

    def seqs(self) -> set[int]:
        """Every acknowledged ledger seq."""
        with self._lock:
            return {a.seq for a in self.acks}

    def unavailability(self, old_port: int, new_port: int, since: float) -> float | None:
        """Seconds from the last acknowledged write on ``old_port`` to the first on ``new_port`` after ``since``."""
        with self._lock:
            last_old = max((a.at for a in self.acks if a.port == old_port and a.at >= since - 60), default=None)
            first_new = min((a.at for a in self.acks if a.port == new_port and a.at >= since), default=None)
        if last_old is None or first_new is None:
            return None
        return first_new - last_old

    def _run(self, n: int) -> None:
        rnd = random.Random(n * 7919 + time.time_ns())

        def transfer(conn: Any) -> None:
            with conn.transaction():
                a, b, amount = move_money(conn, rnd, self.accounts)
                seq = conn.execute(NEXT_SEQ_SQL).fetchone()[0]
                conn.execute("INSERT INTO history (id, from_id, to_id, amount, note, seq, at) VALUES ("
                             + ("nextval('history_id_seq')" if self.ids == "sequence" else "%(seq)s")
                             + ", %(a)s, %(b)s, %(amount)s, %(note)s, %(seq)s, now())",
                             {"a": a, "b": b, "amount": amount, "note": f"ack {n}", "seq": seq})
                server = str(conn.execute(self.identify_sql).fetchone()[0]) if self.identify_sql else ""
            port = int(conn.info.port)
            with self._lock:
                self.acks.append(Ack(int(seq), time.monotonic(), port, server))

        def failed(exc: psycopg.Error) -> None:
            with self._lock:
                self.errors += 1
                self.error_kinds[str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__] += 1

        client_loop(self.dsn, self._stop, transfer, failed, error_pause_s=0.02, pause_s=self.pause_s)

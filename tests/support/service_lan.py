"""Database nodes as hosts on one switch, with the group's service address between them (issue 11; F25): the switch,
the databases and the address are deploy/service_lan.py's (bench/rto.py uses them too); here, what only tests need:
the group's YAML written for a test :class:`Group`, :class:`ServiceSampler` and the :func:`node_lan` fixture.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import yaml

from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.service_lan import CLIENT_OPTIONS, IDENTIFY_SQL
from deploy.service_lan import NodeLan as _NodeLan
from tests.support.partition import WritableSampler
from tests.support.replication import Group

__all__ = ["CLIENT_OPTIONS", "IDENTIFY_SQL", "NodeLan", "ServiceSampler", "node_lan"]


class NodeLan(_NodeLan):
    """deploy.service_lan.NodeLan with a test group's YAML written for it."""

    def configure(self, group: Group, bootstrap: str) -> None:
        """The group's YAML for every process here (:meth:`configure_doc`)."""
        doc = self.configure_doc(yaml.safe_load(group.config.read_text()), bootstrap)
        group.config.write_text(yaml.safe_dump(doc, sort_keys=False))


class ServiceSampler(WritableSampler):
    """:class:`WritableSampler` (a fresh session on each database directly: is it writable?) that also asks the
    service address, in the same round and in parallel: who answers (its ``cluster_name``), and is it writable?
    A thread of its own notes, every 0.2 s, which reachable hosts hold the address (a round waits for the connect
    timeout of a host that is gone, 2 s)."""

    def __init__(self, dsns: dict[str, str], service_dsn: str, holders: Callable[[], list[str]]) -> None:
        self.service_dsn = service_dsn
        self._holders = holders
        #: (time, node that answered or None, writable), one per round.
        self.via: list[tuple[float, str | None, bool]] = []
        #: (time, reachable holders).
        self.held: list[tuple[float, list[str]]] = []
        self._pool = ThreadPoolExecutor(len(dsns) + 1, thread_name_prefix="service-sampler")
        super().__init__(dsns)
        self._held_thread = threading.Thread(target=self._watch_holders, name="service-holders", daemon=True)
        self._held_thread.start()

    @staticmethod
    def _who(dsn: str) -> tuple[str | None, bool]:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute("SELECT current_setting('cluster_name'), pg_is_in_recovery(), "
                                   "current_setting('transaction_read_only')").fetchone()
        except psycopg.Error:
            return None, False
        if row is None:
            return None, False
        return str(row[0]), not row[1] and row[2] == "off"

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            at = time.monotonic()
            direct = {n: self._pool.submit(self._writable, d) for n, d in self.dsns.items()}
            via = self._pool.submit(self._who, self.service_dsn)
            self.rounds.append((at, {n: f.result() for n, f in direct.items()}))
            self.via.append((at, *via.result()))

    def _watch_holders(self) -> None:
        while not self._stop.wait(0.2):
            at = time.monotonic()
            with contextlib.suppress(Exception):  # noqa: BLE001 - a namespace torn down at the end
                self.held.append((at, self._holders()))

    def stray(self) -> list[float]:
        """Rounds where the service address answered from one node while another was the writable primary."""
        writable = {at: [n for n, w in row.items() if w] for at, row in self.rounds}
        return [at for at, who, _w in self.via if who is not None and any(n != who for n in writable.get(at, []))]

    def doubly_held(self) -> list[float]:
        """Times two reachable hosts held the service address."""
        return [at for at, nodes in self.held if len(nodes) > 1]

    def first_answer(self, node: str, since: float) -> float | None:
        """When the service address first answered from ``node`` as a writable primary, after ``since``."""
        return next((at for at, who, w in self.via if at >= since and who == node and w), None)

    def stop(self) -> None:
        super().stop()
        self._held_thread.join(10)
        self._pool.shutdown(wait=True)


@contextlib.contextmanager
def node_lan(nodes: Sequence[str], workdir: Path, *, kafka_home: Path | None = None) -> Iterator[NodeLan]:
    """A :class:`NodeLan` with its databases started, finally destroyed; the test is skipped where namespaces cannot
    be made. With ``kafka_home``, also a broker of its own (:attr:`NodeLan.broker`, extra listener on the root's
    address of the segment), started while the databases are initialised (the JVM's start and initdb overlap)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces, a bridge and veth pairs")
    net = NodeLan(nodes, workdir)
    try:
        net.create()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        net.destroy()
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"needs 'ip netns', bridges and veth pairs, which failed here: {detail}")
    try:
        starting: threading.Thread | None = None
        failed: list[BaseException] = []
        if kafka_home is not None:
            broker = net.broker = KafkaBroker(kafka_home, free_port(), free_port(),
                                              extra_listener=(net.lan.root_addr, free_port()))

            def start() -> None:
                try:
                    broker.start(timeout=180)
                except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
                    failed.append(exc)

            starting = threading.Thread(target=start, name="broker-start", daemon=True)
            starting.start()
        net.start_databases()
        if starting is not None:
            starting.join(240)
            if failed:
                raise failed[0]
        yield net
    finally:
        net.destroy()

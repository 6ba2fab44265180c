"""Database nodes as hosts on one switch, with the group's service address between them (issue 11; F25).

Each node is a host of a :class:`~tests.support.netlan.Lan`: a network namespace of its own with one cable into the
bridge. Its PostgreSQL runs inside that namespace (``PgInstance(netns=...)``), and so do its node agent and its
capture, so that the service address its agent claims on the host's ``eth0`` reaches that database. Every database
listens on every address of its host (``*``) and on the same port: a client that knows only the service address and
the port reaches whichever node holds the address. Each server's ``cluster_name`` is its node's name, which is how a
client (``AckClient(identify_sql=IDENTIFY_SQL)``) and :class:`ServiceSampler` tell who answered.

The root namespace is plugged into the switch too (``Lan(root_port=True)``): the broker's extra listener is on the
root's address of the segment, and every process, in a node's namespace or not, uses it as its bootstrap; the test,
the appliers and the controller reach the databases at their addresses of the segment.
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

from common.service_address import IpAddress
from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.postgres import PgInstance
from tests.support.netlan import Lan
from tests.support.partition import WritableSampler
from tests.support.replication import Group

#: The one value that names the server a session is on (every node's cluster_name is its node name).
IDENTIFY_SQL = "SELECT current_setting('cluster_name')"
#: What a client of a service address needs besides it: a short connect timeout, and TCP timeouts that notice a
#: vanished server (a dead host sends no FIN: without them a session waits for the kernel's retransmissions,
#: ~15 min). target_session_attrs: a node that holds the address but is read-only is refused, not written to.
CLIENT_OPTIONS = ("connect_timeout=2 tcp_user_timeout=2000 keepalives_idle=1 keepalives_interval=1 "
                  "keepalives_count=2")


class NodeLan:
    """The database nodes on one switch, their databases, and the service address (see the module docstring)."""

    def __init__(self, nodes: Sequence[str], workdir: Path, interface: str = "eth0") -> None:
        self.nodes = list(nodes)
        self.lan = Lan(self.nodes, root_port=True)
        self.workdir = workdir
        self.interface = interface
        self.port = free_port()
        self.pgs: dict[str, PgInstance] = {}
        #: The hosts whose cable is out now.
        self.cut: set[str] = set()
        #: The case's broker, when :func:`node_lan` made one.
        self.broker: KafkaBroker | None = None

    @property
    def address(self) -> str:
        """The service address with its prefix (a free address of the segment)."""
        return self.lan.free_addr()

    @property
    def service_ip(self) -> str:
        return self.address.split("/")[0]

    def create(self) -> NodeLan:
        """The namespaces, the bridge and the root's port (:meth:`start_databases` then puts the databases on it)."""
        self.lan.create()
        return self

    def start_databases(self) -> None:
        """One PostgreSQL per node, initialised and started inside its host's namespace."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        for n in self.nodes:
            inst = PgInstance(self.workdir / f"pg-{n}", self.port, netns=self.lan.ns(n), host=self.lan.addr(n))
            self.pgs[n] = inst
            inst.init(extra_conf={"listen_addresses": "*", "cluster_name": n}, extra_listen=(self.lan.addr(n),))
            inst.start()

    def service_dsn(self, dbname: str, *, read_write: bool = True) -> str:
        """A DSN that names only the service address."""
        attrs = " target_session_attrs=read-write" if read_write else ""
        return f"host={self.service_ip} port={self.port} dbname={dbname} user=postgres {CLIENT_OPTIONS}{attrs}"

    def configure(self, group: Group, bootstrap: str) -> None:
        """The group's YAML for every process here: the databases at their addresses of the segment, the broker at
        its extra listener, the agents with their data directories (offline fences), and the service address."""
        doc = yaml.safe_load(group.config.read_text())
        doc["kafka"]["bootstrap"] = bootstrap
        for entry in (doc["primary"], *doc["standbys"]):
            inst = self.pgs[entry["name"]]
            entry["host"] = inst.host
            entry["agent"] = {"data_dir": str(inst.datadir)}
        doc["service_address"] = {"address": self.address, "interface": self.interface}
        group.config.write_text(yaml.safe_dump(doc, sort_keys=False))

    def holds(self, node: str) -> bool:
        """Whether ``node``'s host has the service address on its interface now."""
        return IpAddress(self.address, self.interface, netns=self.lan.ns(node)).held() is True

    def holders(self) -> list[str]:
        """The nodes holding the service address whose cable is in (those the segment can reach)."""
        return [n for n in self.nodes if n not in self.cut and self.holds(n)]

    def cut_cable(self, node: str) -> None:
        self.lan.cut(node)
        self.cut.add(node)

    def heal_cable(self, node: str) -> None:
        self.lan.heal(node)
        self.cut.discard(node)

    def reboot_forgets_address(self, node: str) -> None:
        """What a reboot does to the host's addresses: one added with ``ip addr add`` is gone."""
        IpAddress(self.address, self.interface, netns=self.lan.ns(node)).release()

    def destroy(self) -> None:
        for inst in self.pgs.values():
            try:
                inst.stop(mode="immediate")
            except RuntimeError:
                inst.kill9()
        if self.broker is not None:
            self.broker.stop()
        self.lan.destroy()


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

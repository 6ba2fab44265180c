"""Database nodes as hosts on one switch, with the group's service address between them (issue 11; F25 and
bench/rto.py's ``--via service-address``).

Each node is a host of a :class:`~deploy.netlan.Lan`: a network namespace of its own with one cable into the
bridge. Its PostgreSQL runs inside that namespace (``PgInstance(netns=...)``), and so do its node agent and its
capture, so that the service address its agent claims on the host's ``eth0`` reaches that database. Every database
listens on every address of its host (``*``) and on the same port: a client that knows only the service address and
the port reaches whichever node holds the address. Each server's ``cluster_name`` is its node's name, which is how a
client (``AckClient(identify_sql=IDENTIFY_SQL)``) tells who answered. ``clients`` adds hosts with no database (a
client of the service address in a namespace of its own).

The root namespace is plugged into the switch too (``Lan(root_port=True)``): the broker's extra listener is on the
root's address of the segment, and every process, in a node's namespace or not, uses it as its bootstrap; the
controller and ``ark`` commands run there reach the databases at their addresses of the segment.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.service_address import IpAddress
from deploy.kafka import KafkaBroker
from deploy.netlan import Lan
from deploy.ports import free_port
from deploy.postgres import PgInstance

#: The one value that names the server a session is on (every node's cluster_name is its node name).
IDENTIFY_SQL = "SELECT current_setting('cluster_name')"
#: What a client of a service address needs besides it: a short connect timeout, and TCP timeouts that notice a
#: vanished server (a dead host sends no FIN: without them a session waits for the kernel's retransmissions,
#: ~15 min). target_session_attrs: a node that holds the address but is read-only is refused, not written to.
CLIENT_OPTIONS = ("connect_timeout=2 tcp_user_timeout=2000 keepalives_idle=1 keepalives_interval=1 "
                  "keepalives_count=2")


class NodeLan:
    """The database nodes on one switch, their databases, and the service address (see the module docstring)."""

    def __init__(self, nodes: Sequence[str], workdir: Path, interface: str = "eth0", *,
                 clients: Sequence[str] = ()) -> None:
        self.nodes = list(nodes)
        #: Hosts on the switch with no database (a client of the service address in a namespace of its own).
        self.clients = list(clients)
        self.lan = Lan([*self.nodes, *self.clients], root_port=True)
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

    def configure_doc(self, doc: dict[str, Any], bootstrap: str) -> dict[str, Any]:
        """A group's config (the parsed YAML) for every process here: the databases at their addresses of the segment,
        the broker at its extra listener, the agents with their data directories (offline fences), and the service
        address. Changed in place and returned."""
        doc["kafka"]["bootstrap"] = bootstrap
        for entry in (doc["primary"], *doc["standbys"]):
            inst = self.pgs[entry["name"]]
            entry["host"] = inst.host
            entry["port"] = inst.port
            entry["agent"] = {"data_dir": str(inst.datadir)}
        doc["service_address"] = {"address": self.address, "interface": self.interface}
        return doc

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

    def pids(self, host: str) -> list[int]:
        """Every process running inside ``host``'s namespace now."""
        out = subprocess.run(["ip", "netns", "pids", self.lan.ns(host)], capture_output=True, text=True, check=False,
                             timeout=30).stdout
        return [int(p) for p in out.split()]

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL to every process of ``host``'s namespace (its database, agents, anything started there): what an
        OOM killer or a crashed host with its kernel still up leaves. The namespace keeps its addresses (the service
        address too): see :meth:`reboot_forgets_address`. Returns the pids killed."""
        killed = []
        for pid in self.pids(host):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        return killed

    def destroy(self) -> None:
        for inst in self.pgs.values():
            try:
                inst.stop(mode="immediate")
            except RuntimeError:
                inst.kill9()
        if self.broker is not None:
            self.broker.stop()
        self.lan.destroy()

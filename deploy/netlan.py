"""A little LAN of network namespaces: one namespace per host, joined by a bridge, like hosts on a switch (tests and
bench/rto.py's ``--via service-address``).

``Lan(["node1", "node2", "client"])`` makes a namespace ``<tag>-br`` holding a bridge, and one namespace per host
with a veth pair into it: host ``i`` gets ``10.<net>.<sub>.<i+1>/24`` on its interface ``eth0``. Nothing touches
the root namespace's links or routes, so a test cannot disturb the machine's own network. :meth:`Lan.cut` takes a
host's cable out (its bridge port down), :meth:`Lan.heal` puts it back. Needs root (CAP_NET_ADMIN) and iproute2.

``Lan(..., root_port=True)`` also plugs the root namespace into the switch (:attr:`Lan.root_addr`, ``.254``): what
stays in the root namespace (a broker, the test itself) and the hosts then reach each other at their addresses of
the segment. That adds one link and its /24 route to the root namespace, on a subnet no root address is on.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Sequence


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` (raises CalledProcessError with its stderr when ``check`` and it fails)."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class Lan:
    """Hosts on one switch (see the module docstring)."""

    def __init__(self, hosts: Sequence[str], *, root_port: bool = False) -> None:
        self.tag = "ark" + uuid.uuid4().hex[:5]
        self.subnet = f"10.{random.randint(100, 250)}.{random.randint(1, 250)}"
        self.hosts = list(hosts)
        self.bridge_ns = f"{self.tag}-br"
        self.root_port = root_port
        #: The root namespace's address on the segment (with ``root_port``).
        self.root_addr = f"{self.subnet}.254"

    def ns(self, host: str) -> str:
        """The namespace of ``host``."""
        return f"{self.tag}-{self.hosts.index(host)}"

    def addr(self, host: str) -> str:
        """The host's own address (no prefix)."""
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def free_addr(self, last: int = 200) -> str:
        """An address of the segment no host has, with its prefix (for a service address)."""
        return f"{self.subnet}.{last}/24"

    def prefix(self, host: str) -> list[str]:
        """Argv prefix that runs a command inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def _port(self, host: str) -> str:
        return f"{self.tag}p{self.hosts.index(host)}"

    def _pick_free_subnet(self) -> None:
        """A subnet the root namespace has no address on (other tests plug their own in at the same time)."""
        used = ip("-o", "-4", "addr", "show").stdout
        while f" {self.subnet}." in used:
            self.subnet = f"10.{random.randint(100, 250)}.{random.randint(1, 250)}"
        self.root_addr = f"{self.subnet}.254"

    def create(self) -> Lan:
        """Make the namespaces, the bridge and the cables (and the root namespace's, with ``root_port``)."""
        if self.root_port:
            self._pick_free_subnet()
        ip("netns", "add", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for host in self.hosts:
            ns, port = self.ns(host), self._port(host)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", port, "netns", self.bridge_ns)
            ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", port, "up")
            ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        if self.root_port:
            root_if, peer = f"{self.tag}r", f"{self.tag}q"
            ip("link", "add", root_if, "type", "veth", "peer", "name", peer, "netns", self.bridge_ns)
            ip("-n", self.bridge_ns, "link", "set", peer, "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", peer, "up")
            ip("addr", "add", f"{self.root_addr}/24", "dev", root_if)
            ip("link", "set", root_if, "up")
        return self

    def cut(self, host: str) -> None:
        """Take ``host``'s cable out: its packets vanish, as with a dead switch port."""
        ip("-n", self.bridge_ns, "link", "set", self._port(host), "down")

    def heal(self, host: str) -> None:
        """Put ``host``'s cable back."""
        ip("-n", self.bridge_ns, "link", "set", self._port(host), "up")

    def destroy(self) -> None:
        """Remove everything (deleting a namespace deletes its ends of the cables)."""
        if self.root_port:
            ip("link", "del", f"{self.tag}r", check=False)
        for host in self.hosts:
            ip("netns", "del", self.ns(host), check=False)
        ip("netns", "del", self.bridge_ns, check=False)


def limit_rate(namespace: str | None, dev: str, rate: str, *, latency_ms: int = 200, burst: str = "32kb") -> None:
    """Shape what ``dev`` (in ``namespace``; None: the root namespace) sends to ``rate`` (tc's units: ``10mbit``,
    ``1gbit``) with a token bucket (``tbf``): a slow link's bandwidth, its queue holding at most ``latency_ms``
    of traffic. Only the sending direction of ``dev`` is shaped; shape the other end for the other direction."""
    where = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*where, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", burst,
                    "latency", f"{latency_ms}ms"], capture_output=True, text=True, check=True, timeout=30)

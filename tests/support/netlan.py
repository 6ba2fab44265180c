"""Network namespaces for tests: :class:`Lan` (hosts on a switch, deploy/netlan.py, re-exported here) and
:class:`NodeLinks` (each node linked to the root namespace, its route to the broker cut at will). Needs root
(CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

from deploy.netlan import Lan, ip

__all__ = ["Lan", "NodeLinks", "ip"]


class NodeLinks:
    """Each node's processes in a network namespace of their own, with one veth link to the root namespace, and
    one address in the root namespace where the broker listens for them: a node can be cut off from Kafka (and so
    from the controller) while its database stays reachable, which a cable pulled out cannot do.

    Node ``i``'s namespace has ``10.<net>.<i+1>.2`` on ``eth0``; the root end is ``10.<net>.<i+1>.1``
    (:meth:`db_host`: every database listens there, so the node reaches any database through its own link). The
    broker's address ``10.<net>.250.1`` (:attr:`kafka_host`) is a second address of the first link's root end,
    routed into every namespace through its own link. :meth:`cut_kafka` replaces that route with a blackhole inside
    the node's namespace (its packets to the broker go nowhere; its database traffic is untouched);
    :meth:`heal_kafka` puts the route back.
    """

    def __init__(self, nodes: Sequence[str]) -> None:
        self.tag = "ark" + uuid.uuid4().hex[:5]
        self.net = f"10.{random.randint(100, 250)}"
        self.nodes = list(nodes)
        self.kafka_host = f"{self.net}.250.1"

    def ns(self, node: str) -> str:
        return f"{self.tag}-{self.nodes.index(node)}"

    def db_host(self, node: str) -> str:
        """The root end of ``node``'s link: where the node's processes reach the databases."""
        return f"{self.net}.{self.nodes.index(node) + 1}.1"

    def db_hosts(self) -> tuple[str, ...]:
        return tuple(self.db_host(n) for n in self.nodes)

    def prefix(self, node: str) -> list[str]:
        """Argv prefix that runs a command inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.ns(node)]

    def _root_if(self, node: str) -> str:
        return f"{self.tag}h{self.nodes.index(node)}"

    def create(self) -> NodeLinks:
        for node in self.nodes:
            ns, root_if, i = self.ns(node), self._root_if(node), self.nodes.index(node) + 1
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", root_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("addr", "add", f"{self.net}.{i}.1/24", "dev", root_if)
            if i == 1:
                ip("addr", "add", f"{self.kafka_host}/32", "dev", root_if)
            ip("link", "set", root_if, "up")
            ip("-n", ns, "addr", "add", f"{self.net}.{i}.2/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            self.heal_kafka(node)
        return self

    def cut_kafka(self, node: str) -> None:
        ip("-n", self.ns(node), "route", "replace", "blackhole", f"{self.kafka_host}/32")

    def heal_kafka(self, node: str) -> None:
        ip("-n", self.ns(node), "route", "replace", f"{self.kafka_host}/32", "via", self.db_host(node))

    def destroy(self) -> None:
        for node in self.nodes:
            ip("link", "del", self._root_if(node), check=False)
            ip("netns", "del", self.ns(node), check=False)

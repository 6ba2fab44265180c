"""What the partition and crash cases share: a sampler of which databases are writable, and the group's YAML as
one node's namespace sees it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import yaml

from deploy.compare import compare_tables
from deploy.postgres import PgInstance
from tests.support.faults import BANK_TABLES, FaultRun, history_keys, ledger_max, wait_ledger
from tests.support.handover import AckClient, divergence_seqs
from tests.support.netlan import NodeLinks
from tests.support.replication import Group, wait_for


class WritableSampler:
    """Every 50 ms, a fresh session on each database: is it writable (not in recovery, new sessions not read-only)?
    Each round is one (time, {node: writable}) row."""

    def __init__(self, dsns: dict[str, str]) -> None:
        self.dsns = dsns
        self.rounds: list[tuple[float, dict[str, bool]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writable-sampler", daemon=True)
        self._thread.start()

    @staticmethod
    def _writable(dsn: str) -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=1, autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')").fetchone()
        except psycopg.Error:
            return False
        return row is not None and not row[0] and row[1] == "off"

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.rounds.append((time.monotonic(), {n: self._writable(d) for n, d in self.dsns.items()}))

    def first(self, node: str, writable: bool, since: float) -> float | None:
        return next((t for t, w in self.rounds if t >= since and w[node] == writable), None)

    def both_writable(self) -> list[float]:
        return [t for t, w in self.rounds if all(w.values())]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def node_config(group: Group, links: NodeLinks, node: str, bootstrap: str) -> Path:
    """The group's YAML as seen from ``node``'s namespace: the broker and every database through its own link."""
    doc = yaml.safe_load(group.config.read_text())
    doc["kafka"]["bootstrap"] = bootstrap
    for entry in (doc["primary"], *doc["standbys"]):
        entry["host"] = links.db_host(node)
    path = group.config.with_name(f"{group.config.stem}-{node}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def agents_know_data_dirs(group: Group, nodes: dict[str, PgInstance]) -> None:
    """Give each node's agent its data directory in the group's YAML, so that it can fence it offline."""
    doc = yaml.safe_load(group.config.read_text())
    for entry in (doc["primary"], *doc["standbys"]):
        entry["agent"] = {"data_dir": str(nodes[entry["name"]].datadir)}
    group.config.write_text(yaml.safe_dump(doc, sort_keys=False))


def check_the_end(group: Group, result: FaultRun, client: AckClient, sampler: WritableSampler, primary_dsn: str,
                  standby_dsn: str) -> None:
    """After the last run of a partition or crash case (the client stopped): both nodes equal row by row, every
    acknowledged commit on the final primary or in the divergence ledger, and never two writable primaries."""
    wait_for(lambda: all(d.equal for d in compare_tables(primary_dsn, standby_dsn, BANK_TABLES)), 120,
             "both nodes equal at the end")
    _ids, seqs = history_keys(primary_dsn)
    diverged = divergence_seqs(group)
    missing = client.seqs() - set(seqs) - diverged
    result.lost += len(missing)
    result.unequal_tables += [d.table for d in compare_tables(primary_dsn, standby_dsn, BANK_TABLES) if not d.equal]
    result.samples = len(sampler.rounds)
    both = sampler.both_writable()
    result.partial_visible += len(both)
    result.notes.append(f"{client.count()} acknowledged commits, {len(diverged)} in the divergence ledger; "
                        f"{len(sampler.rounds)} sample rounds, {len(both)} with two writable primaries")
    assert not missing, f"acknowledged commits neither on the primary nor in the divergence ledger: " \
                        f"{sorted(missing)[:10]}"
    assert not both, f"two writable primaries at {len(both)} sample rounds"


def wait_data_dir_fenced(inst: PgInstance, node: str, timeout: float = 30) -> None:
    """The dead node's agent, back before its database, fenced the data directory: it will start read-only."""
    auto_conf = inst.datadir / "postgresql.auto.conf"
    wait_for(lambda: "default_transaction_read_only = 'on'" in auto_conf.read_text(), timeout,
             f"{node}'s agent to fence its data directory")


def reinstate_dead_node(group: Group, inst: PgInstance, node: str, report: Path, dsns: dict[str, str],
                        new_primary: str) -> str:
    """Start the dead (fenced, demoted) node's database, ``ark reinstate`` it, and wait until it applied the new
    primary's ledger: the node is a standby again. Returns what the reinstate said."""
    inst.start()
    said = group.ark_ok("reinstate", node, "--report", str(report), timeout=300)
    wait_ledger(dsns[node], ledger_max(dsns[new_primary]), 120)
    return said

"""PostgreSQL over a slow link: Ark (``kafka.compression: auto``) vs native logical replication (issue 13, item 5).

Two sites joined by rate-limited links, in network namespaces (root needed):

* **site A, the primary's host** (a network namespace of its own): the primary PostgreSQL 15, pgbench (its
  clients are local, as an application next to its database), and Ark's capture (it runs where the primary runs);
* **site B, the standby site** (the root namespace): the native subscriber, Ark's standby and applier, and the
  Kafka broker. The broker sits on the standby's side of the link, as a disaster-recovery set-up places it: the
  WAN then carries each change once, compressed, from the capture to the broker; the applier reads it at LAN speed;
  and what Kafka holds survives the loss of site A.

Each pipeline gets a link of its own, two veth pairs shaped alike with ``tc ... tbf`` in the direction A → B
(``--rate``, 10 Mbit/s by default): link 0 carries the native walsender's stream to the subscriber, link 1 the
capture's produce requests to the broker. Each link's bytes are read from its interface counters, so they include
everything the pipeline sends over it (framing, TCP, heartbeats), not only payload.

The initial copies (native's ``copy_data``, ``ark sync``) run before the links are shaped. Then pgbench tpcb-like
for ``--seconds`` with a probe row committed every ``--probe-every`` seconds; per pipeline:

* **keeping up**: the lag of each probe committed during the run (its commit on the primary → seen on the standby,
  measured after the catch-up), how far behind each standby is when pgbench ends (the age of the oldest probe it
  does not hold yet), and the seconds after pgbench ends until it holds everything (catch-up: a pipeline that keeps
  up catches up at once);
* **volume**: bytes on the pipeline's link during the run and its catch-up, against the WAL the run wrote
  (goal: Ark ≤ 0.25× WAL bytes);
* Ark's codec changes, as the capture logged them (what it measured, what it chose).

    python bench/pg_link.py [--rate 10mbit] [--seconds 60] [--scale 10] [--clients 4] [--compression auto]

Figures and how to read them: bench/README.md, "Over a slow link".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.agents import AgentProcess  # noqa: E402
from deploy.kafka import KafkaBroker  # noqa: E402
from deploy.netlan import ip, limit_rate  # noqa: E402
from deploy.ports import free_port  # noqa: E402
from deploy.postgres import PG_BIN, PgInstance  # noqa: E402
from schemas.topics import redo_topic  # noqa: E402

DB = "bench"
GROUP = "pglink"
PUB, SUB = "link_pub", "link_sub"
TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "lag_probe"]
os.environ.setdefault("ARK_CONTROL_KEY", secrets.token_hex(32))  # the group's control key, for this run only
_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


def sql(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


class Wan:
    """Site A (a network namespace) joined to site B (the root namespace) by two veth pairs: link ``i`` is
    ``10.<net>.<i+1>.1`` on B's end and ``.2`` on A's end (``eth<i>`` in A)."""

    def __init__(self) -> None:
        self.tag = "arkw" + uuid.uuid4().hex[:4]
        self.ns = f"{self.tag}-a"
        self.net = f"10.{random.randint(100, 250)}"

    def a_addr(self, link: int) -> str:
        return f"{self.net}.{link + 1}.2"

    def b_addr(self, link: int) -> str:
        return f"{self.net}.{link + 1}.1"

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def create(self) -> Wan:
        used = ip("-o", "-4", "addr", "show").stdout
        while f" {self.net}." in used:
            self.net = f"10.{random.randint(100, 250)}"
        ip("netns", "add", self.ns)
        ip("-n", self.ns, "link", "set", "lo", "up")
        for link in (0, 1):
            root_if = f"{self.tag}b{link}"
            ip("link", "add", root_if, "type", "veth", "peer", "name", f"eth{link}", "netns", self.ns)
            ip("addr", "add", f"{self.b_addr(link)}/24", "dev", root_if)
            ip("link", "set", root_if, "up")
            ip("-n", self.ns, "addr", "add", f"{self.a_addr(link)}/24", "dev", f"eth{link}")
            ip("-n", self.ns, "link", "set", f"eth{link}", "up")
        return self

    def shape(self, rate: str) -> None:
        """Rate-limit A → B on both links (tbf; its bucket sized for about 10 ms at the rate, at least 32 kB)."""
        bits = _rate_bits(rate)
        burst = max(32_000, bits // 8 // 100)
        for link in (0, 1):
            limit_rate(self.ns, f"eth{link}", rate, burst=str(burst), latency_ms=200)

    def tx_bytes(self, link: int) -> int:
        """Bytes A has sent over link ``link`` (its interface counter)."""
        doc = json.loads(ip("-n", self.ns, "-s", "-j", "link", "show", f"eth{link}").stdout)
        return int(doc[0]["stats64"]["tx"]["bytes"])

    def destroy(self) -> None:
        for link in (0, 1):
            ip("link", "del", f"{self.tag}b{link}", check=False)
        ip("netns", "del", self.ns, check=False)


def _rate_bits(rate: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
    if not m:
        raise SystemExit(f"error: --rate {rate!r} is not a tc rate\nfix: give it as tc does, e.g. 10mbit or 1gbit")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2)])


def fingerprint(dsn: str) -> tuple[int, int]:
    row = sql(dsn, "SELECT (SELECT count(*) FROM pgbench_history), "
                   "(SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)")[0]
    return int(row[0]), int(row[1])


def write_config(path: Path, *, kafka: str, primary_host: str, primary: PgInstance, standby: PgInstance,
                 compression: str) -> Path:
    def db(name: str, host: str, inst: PgInstance, **extra: Any) -> dict[str, Any]:
        return {"name": name, "engine": "postgresql", "host": host, "port": inst.port, "dbname": DB,
                "user": "postgres", **extra}

    doc = {"group": GROUP, "control_key": {"env": "ARK_CONTROL_KEY"},
           "kafka": {"bootstrap": kafka, "compression": compression},
           "primary": db("primary", primary_host, primary, tables=[f"public.{t}" for t in TABLES]),
           "standbys": [db("standby", "127.0.0.1", standby)]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ark(config: Path, *args: str, timeout: float = 900) -> str:
    return run([sys.executable, "-m", "ops", "-c", str(config), *args], timeout=timeout, cwd=ROOT).stdout


class Probes:
    """A probe row committed on the primary every ``every`` seconds; each standby polled for the probes it holds.
    A probe's lag is (first seen on the standby) - (its ``at``, the primary's clock_timestamp() at insert): the
    namespaces share the machine's clock, and the inserter's own round trip over the link does not count."""

    def __init__(self, primary_dsn: str, standbys: dict[str, str], every: float) -> None:
        self.primary_dsn, self.standbys, self.every = primary_dsn, standbys, every
        self.committed: dict[int, float] = {}  # probe id -> its 'at' (epoch seconds)
        self.seen: dict[str, dict[int, float]] = {name: {} for name in standbys}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._insert, daemon=True)]
        self._threads += [threading.Thread(target=self._poll, args=(n,), daemon=True) for n in standbys]

    def start(self) -> Probes:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _insert(self) -> None:
        with psycopg.connect(self.primary_dsn, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                row = conn.execute("INSERT INTO lag_probe DEFAULT VALUES RETURNING id, extract(epoch FROM at)"
                                   ).fetchone()
                if row:
                    self.committed[int(row[0])] = float(row[1])

    def _poll(self, name: str) -> None:
        seen = self.seen[name]
        last = int(sql(self.standbys[name], "SELECT coalesce(max(id), 0) FROM lag_probe")[0][0])
        with psycopg.connect(self.standbys[name], autocommit=True) as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute("SELECT id, extract(epoch FROM at) FROM lag_probe WHERE id > %s ORDER BY id",
                                    (last,)).fetchall()
                now = time.time()
                for pid, at in rows:
                    seen[int(pid)] = now - float(at)
                    last = max(last, int(pid))

    def lags(self, name: str, until: float) -> list[float]:
        """Lag of every probe committed up to ``until`` (epoch seconds); one never seen counts as lagging until
        now."""
        now = time.time()
        return [self.seen[name].get(pid, now - at) for pid, at in sorted(self.committed.items()) if at <= until]

    def behind(self, name: str) -> float:
        """How far behind the standby is now: the age of the oldest probe it does not hold yet (0 when none)."""
        now = time.time()
        return max((now - at for pid, at in self.committed.items() if pid not in self.seen[name]), default=0.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="10mbit", help="each link's rate, A to B, in tc's units (default 10mbit)")
    ap.add_argument("--seconds", type=int, default=60, help="pgbench -T (default 60)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    ap.add_argument("--compression", default="auto", help="Ark's kafka.compression (default auto)")
    ap.add_argument("--probe-every", type=float, default=0.5, help="seconds between probe rows (default 0.5)")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy the agents' logs here at the end")
    ap.add_argument("--catch-up-timeout", type=float, default=600, help="longest wait for a standby after pgbench")
    args = ap.parse_args(argv)
    _rate_bits(args.rate)
    if os.geteuid() != 0:
        print("error: bench/pg_link.py makes network namespaces and shapes links\nfix: run it as root",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="ark-link-", dir="/tmp"))
    root.chmod(0o755)
    (root / "pg").mkdir()
    (root / "pg").chmod(0o755)
    say(f"work dir {root}")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        wan = Wan().create()
        stack.callback(wan.destroy)
        say(f"site A: namespace {wan.ns}; links A->B: native {wan.a_addr(0)}->{wan.b_addr(0)}, "
            f"Ark {wan.a_addr(1)}->{wan.b_addr(1)}")
        broker = KafkaBroker(root / "kafka", free_port(), free_port(), extra_listener=(wan.b_addr(1), free_port()))
        stack.callback(broker.stop)
        broker.start(timeout=180)
        primary = PgInstance(root / "pg" / "primary", free_port(), netns=wan.ns, host=wan.a_addr(0))
        native = PgInstance(root / "pg" / "native", free_port())
        standby = PgInstance(root / "pg" / "ark", free_port())
        for inst in (primary, native, standby):
            stack.callback(inst.destroy)
            inst.init(extra_listen=(wan.a_addr(0),) if inst is primary else ())
            inst.start()
            inst.create_database(DB)
        pdsn = primary.dsn(DB)
        local = ["-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]  # inside site A
        say(f"pgbench -i -s {args.scale} on the primary (site A)")
        run([*wan.prefix(), str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), *local, DB])
        sql(pdsn, "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
        sql(pdsn, "CREATE TABLE lag_probe (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        sql(pdsn, "VACUUM ANALYZE")

        say("native: schema, publication, subscription (copy_data, before the links are shaped)")
        schema = run([str(PG_BIN / "pg_dump"), "-s", "--no-publications", "--no-subscriptions", "-h", wan.a_addr(0),
                      "-p", str(primary.port), "-U", "postgres", DB]).stdout
        run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(native.port),
             "-U", "postgres", "-d", DB], input=schema)
        sql(pdsn, f"CREATE PUBLICATION {PUB} FOR TABLE {', '.join(TABLES)}")
        sql(native.dsn(DB), f"CREATE SUBSCRIPTION {SUB} CONNECTION '{pdsn}' PUBLICATION {PUB} WITH (copy_data = true)")
        stack.callback(_drop_native, native)
        wait_until(lambda: [s for (s,) in sql(native.dsn(DB), "SELECT srsubstate FROM pg_subscription_rel")]
                   == ["r"] * len(TABLES), 900, "the native initial sync")

        config = write_config(root / "ark.yaml", kafka=broker.bootstrap, primary_host=wan.a_addr(0),
                              primary=primary, standby=standby, compression=args.compression)
        capture_config = write_config(root / "ark-site-a.yaml", kafka=broker.extra_bootstrap or "",
                                      primary_host="127.0.0.1", primary=primary, standby=standby,
                                      compression=args.compression)
        say("ark sync standby (before the links are shaped)")
        ark(config, "sync", "standby")
        logs = root / "logs"
        if args.keep_logs:
            stack.callback(shutil.copytree, logs, args.keep_logs, dirs_exist_ok=True)
        capture = AgentProcess(capture_config, ["capture"], logs / "capture.log", prefix=wan.prefix()).start()
        stack.callback(capture.stop)
        apply = AgentProcess(config, ["apply", "standby"], logs / "apply.log").start()
        stack.callback(apply.stop)
        target = fingerprint(pdsn)
        for name, dsn in (("native", native.dsn(DB)), ("ark", standby.dsn(DB))):
            wait_until(lambda d=dsn: fingerprint(d) == target, 300, f"{name} to stream")
        say("both standbys stream")
        wan.shape(args.rate)
        say(f"links shaped: {args.rate} each, A -> B")

        lsn0 = sql(pdsn, "SELECT pg_current_wal_lsn()::text")[0][0]
        tx0 = (wan.tx_bytes(0), wan.tx_bytes(1))
        kafka0 = _redo_bytes(broker)
        probes = Probes(pdsn, {"native": native.dsn(DB), "ark": standby.dsn(DB)}, args.probe_every).start()
        say(f"pgbench tpcb-like in site A: {args.clients} clients, {args.seconds} s")
        bench = run([*wan.prefix(), str(PG_BIN / "pgbench"), "-n", "-c", str(args.clients), "-j",
                     str(min(args.clients, 2)), "-T", str(args.seconds), *local, DB])
        ended, ended_wall = time.monotonic(), time.time()
        committed = int(re.search(r"actually processed: (\d+)", bench.stdout).group(1))  # type: ignore[union-attr]
        tps = re.search(r"^tps = ([\d.]+)", bench.stdout, re.M)
        lsn1 = sql(pdsn, "SELECT pg_current_wal_lsn()::text")[0][0]
        wal = int(sql(pdsn, "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (lsn1, lsn0))[0][0])
        behind = {name: probes.behind(name) for name in ("native", "ark")}
        say(f"pgbench done: {committed:,} transactions ({tps.group(1) if tps else '?'} tps), WAL {wal / 1e6:.1f} MB; "
            "waiting for both standbys")
        target = fingerprint(pdsn)
        caught: dict[str, float] = {}
        link_bytes: dict[str, int] = {}

        def follow(name: str, dsn: str, link: int) -> None:
            try:
                wait_until(lambda: fingerprint(dsn) == target, args.catch_up_timeout, name, interval=0.1)
                caught[name] = time.monotonic() - ended
            except TimeoutError:
                caught[name] = float("inf")
            link_bytes[name] = wan.tx_bytes(link) - tx0[link]

        threads = [threading.Thread(target=follow, args=("native", native.dsn(DB), 0)),
                   threading.Thread(target=follow, args=("ark", standby.dsn(DB), 1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        probes.stop()
        during = {name: probes.lags(name, ended_wall) for name in ("native", "ark")}  # probes of the run, now seen
        time.sleep(1.5)  # the capture's last commit reaches the broker's files
        kafka = _redo_bytes(broker) - kafka0
        changes = [ln.split(" INFO ")[-1] if " INFO " in ln else ln
                   for ln in (logs / "capture.log").read_text(errors="replace").splitlines() if "redo producer" in ln]
        report(args, committed, tps.group(1) if tps else "?", wal, kafka, during, behind, caught, link_bytes, changes)
    return 0


def _redo_bytes(broker: KafkaBroker) -> int:
    part = broker.data_dir / f"{redo_topic(GROUP)}-0"
    return sum(f.stat().st_size for f in part.glob("*.log"))


def _drop_native(native: PgInstance) -> None:
    with contextlib.suppress(Exception):
        sql(native.dsn(DB), f"DROP SUBSCRIPTION IF EXISTS {SUB}")


def report(args: argparse.Namespace, committed: int, tps: str, wal: int, kafka: int, during: dict[str, list[float]],
           behind: dict[str, float], caught: dict[str, float], link_bytes: dict[str, int], changes: list[str]) -> None:
    print(f"\n== over a {args.rate} link (A -> B, each pipeline its own): pgbench tpcb-like, scale {args.scale}, "
          f"{args.clients} clients, -T {args.seconds}: {committed:,} transactions ({tps} tps); WAL {wal / 1e6:.1f} MB; "
          f"Ark compression {args.compression}")
    print(f"{'':8} {'lag p50':>8} {'p99':>8} {'max':>8} {'behind at end':>14} {'catch-up s':>11} "
          f"{'link MB':>9} {'link/WAL':>9}")
    for name in ("native", "ark"):
        lags = during[name]
        ratio = link_bytes.get(name, 0) / wal if wal else 0.0
        catch = "timeout" if caught[name] == float("inf") else f"{caught[name]:.2f}"
        print(f"{name:8} {pct(lags, 0.5):8.2f} {pct(lags, 0.99):8.2f} {max(lags, default=float('nan')):8.2f} "
              f"{behind[name]:14.2f} {catch:>11} {link_bytes.get(name, 0) / 1e6:9.2f} {ratio:9.3f}")
    print(f"redo topic grew {kafka / 1e6:.2f} MB ({kafka / wal if wal else 0:.3f} of WAL)")
    ark_ratio = link_bytes.get("ark", 0) / wal if wal else 0.0
    keeps = caught["ark"] <= 5.0
    native_behind = caught["native"] > 5.0
    print(f"goal: Ark's link bytes <= 0.25x WAL: {'met' if ark_ratio <= 0.25 else 'NOT met'} ({ark_ratio:.3f})")
    print(f"goal: Ark keeps up (catch-up <= 5 s) where native falls behind: "
          f"{'met' if keeps and native_behind else 'NOT met'} (Ark {caught['ark']:.2f} s, native "
          f"{caught['native']:.2f} s)")
    print("Ark's producer:" if changes else "Ark's producer: no codec change")
    for line in changes:
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())

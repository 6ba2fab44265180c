"""A real single-node Apache Kafka broker (KRaft, broker+controller) run from Maven Central jars.

The jars are fetched once with Maven into ``${ARK_CACHE:-~/.cache/ark}/kafka-<version>/libs``.
A broker lives in a *home* directory holding its server.properties, cluster id, data (``data/``),
logs (``logs/``), console output (``broker.out``) and pid file (``broker.pid``). Data survive
``kill -9`` and restarts with the same home.

Kafka's own command-line tools (``kafka-consumer-groups.sh`` and friends) come from the ``kafka-tools``
artifact, fetched once into ``.../kafka-<version>/tools`` (:func:`ensure_tools_jars`) and run with
:func:`kafka_tool`; ``deploy/kafka-consumer-groups.sh`` is the script form.

Manual use: ``python -m deploy.kafka fetch|fetch-tools|start|stop|status --home DIR --port N``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from deploy._proc import alive, kill_quietly, proc_state, read_pid, tail, wait_dead, wait_stopped

__all__ = ["KAFKA_VERSION", "LOG4J_VERSION", "KafkaBroker", "cache_dir", "ensure_jars", "ensure_tools_jars",
           "kafka_tool"]

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
_ASSETS = Path(__file__).with_name("kafka")
_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
_MARKER_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
_TOOLS_MARKER_JAR = f"kafka-tools-{KAFKA_VERSION}.jar"
#: Kafka's tools by their script names (bin/<name>.sh in a Kafka distribution).
TOOLS = {"kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
         "kafka-topics": "org.apache.kafka.tools.TopicCommand",
         "kafka-configs": "org.apache.kafka.tools.ConfigCommand"}

_SERVER_PROPERTIES = """\
# Written by deploy/kafka.py on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{extra}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{extra}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{extra_map}
log.dirs={data}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.max.timeout.ms=900000
# Fewer internal partitions than the default 50: the first transaction / group join is faster.
transaction.state.log.num.partitions=4
offsets.topic.num.partitions=8
log.retention.check.interval.ms=60000
group.initial.rebalance.delay.ms=0
# After kill -9 the controller refuses the new incarnation until the old broker session expires:
# a short session makes a crash restart take ~4 s instead of ~12 s.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
"""


def cache_dir() -> Path:
    """Return ``${ARK_CACHE:-~/.cache/ark}/kafka-<version>`` (outside the repository)."""
    root = os.environ.get("ARK_CACHE") or str(Path.home() / ".cache" / "ark")
    return Path(root).expanduser() / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Fetch the broker jars once into the cache and return the ``libs`` directory.

    Maven downloads into a temporary directory that is renamed into place, so a half-finished
    fetch never looks complete. Raises RuntimeError with the tail of Maven's output on failure.
    """
    return _fetch("pom.xml", "libs", _MARKER_JAR)


def ensure_tools_jars() -> Path:
    """Fetch Kafka's command-line tools once (``kafka-tools`` and its dependencies) and return their dir."""
    return _fetch("tools-pom.xml", "tools", _TOOLS_MARKER_JAR)


def _fetch(pom_name: str, dirname: str, marker: str) -> Path:
    base = cache_dir()
    libs = base / dirname
    if (libs / marker).is_file():
        return libs
    base.mkdir(parents=True, exist_ok=True)
    pom = (_ASSETS / pom_name).read_text()
    pom = pom.replace("@KAFKA_VERSION@", KAFKA_VERSION).replace("@LOG4J_VERSION@", LOG4J_VERSION)
    (base / pom_name).write_text(pom)
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn not found on PATH: install maven (deploy/bootstrap.sh does)")
    tmp = base / f"{dirname}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["mvn", "-B", "-q", "-f", str(base / pom_name), _DEP_PLUGIN,
           "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
    res = subprocess.run(cmd, cwd=base, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not (tmp / marker).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        out = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise RuntimeError(f"fetching Kafka {KAFKA_VERSION} {dirname} jars failed (mvn exit {res.returncode}):\n{out}")
    try:
        tmp.rename(libs)
    except OSError:  # another process won the race, or a stale incomplete dir is in the way
        if not (libs / marker).is_file():
            shutil.rmtree(libs, ignore_errors=True)
            tmp.rename(libs)
    shutil.rmtree(tmp, ignore_errors=True)
    return libs


def kafka_tool(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's own tools (``kafka-consumer-groups`` ...) from the cached jars; output captured."""
    main_class = TOOLS.get(tool.removesuffix(".sh"), tool)
    libs = ensure_tools_jars()
    cmd = ["java", "-Xms64m", "-Xmx256m", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={_ASSETS / 'log4j2-tools.properties'}", "-cp", f"{libs}/*", main_class, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _random_cluster_id() -> str:
    """A Kafka-style Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker:
    """One local KRaft broker+controller process rooted at ``home``."""

    def __init__(self, home: Path, port: int, controller_port: int,
                 extra_listener: tuple[str, int] | None = None) -> None:
        """Describe a broker; nothing starts until :meth:`start`.

        ``extra_listener`` = (host, port) adds a second client listener, ``EXTRA``, bound to and advertised
        as that address (the fault suite reaches the broker from a network namespace through it; a client
        that bootstraps there is told that address, not 127.0.0.1).
        """
        self.home = Path(home).absolute()
        self.port = port
        self.controller_port = controller_port
        self.extra_listener = extra_listener
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths and facts ---------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """The client bootstrap address, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def extra_bootstrap(self) -> str | None:
        """The bootstrap address of the extra listener, when there is one."""
        return f"{self.extra_listener[0]}:{self.extra_listener[1]}" if self.extra_listener else None

    @property
    def data_dir(self) -> Path:
        """The broker's log.dirs directory (topic data and meta.properties)."""
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        """The log4j directory (``server.log``)."""
        return self.home / "logs"

    @property
    def out_file(self) -> Path:
        """The file receiving the JVM's stdout and stderr."""
        return self.home / "broker.out"

    @property
    def pid_file(self) -> Path:
        """The pid file written at start."""
        return self.home / "broker.pid"

    @property
    def pid(self) -> int | None:
        """The broker's pid when it is running, else None."""
        pid = read_pid(self.pid_file)
        return pid if alive(pid) else None

    def is_running(self) -> bool:
        """True when the broker process exists (a paused broker counts as running)."""
        return self.pid is not None

    def status(self) -> dict[str, Any]:
        """Return ``{running, paused, pid, bootstrap, home}``."""
        pid = self.pid
        return {"running": pid is not None, "paused": pid is not None and proc_state(pid) == "T",
                "pid": pid, "bootstrap": self.bootstrap, "home": str(self.home)}

    # -- lifecycle ---------------------------------------------------------------------------------
    def _java(self, libs: Path) -> list[str]:
        return ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={_ASSETS / 'log4j2.yaml'}",
                f"-Dkafka.logs.dir={self.log_dir}", "-cp", f"{libs}/*"]

    def _format(self, libs: Path, props: Path) -> None:
        """Format the log dir once, keeping the cluster id in ``home/cluster.id``."""
        if (self.data_dir / "meta.properties").is_file():
            return
        id_file = self.home / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(_random_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        cmd = [*self._java(libs), "kafka.tools.StorageTool", "format", "-t", cluster_id,
               "-c", str(props), "--standalone"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{res.stdout}{res.stderr}")

    def start(self, timeout: float = 60) -> None:
        """Start the broker (no-op when already running) and wait until an AdminClient lists topics."""
        if self.is_running():
            self.wait_ready(timeout)
            return
        libs = ensure_jars()
        for d in (self.home, self.data_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        extra = f",EXTRA://{self.extra_bootstrap}" if self.extra_listener else ""
        props.write_text(_SERVER_PROPERTIES.format(port=self.port, cport=self.controller_port, data=self.data_dir,
                                                   extra=extra, extra_map=",EXTRA:PLAINTEXT" if extra else ""))
        self._format(libs, props)
        with self.out_file.open("ab") as out:
            self._proc = subprocess.Popen(
                [*self._java(libs), "kafka.Kafka", str(props)], cwd=self.home,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until an AdminClient can list topics; raise with the console tail when it cannot."""
        from confluent_kafka.admin import AdminClient  # imported here: keeps `fetch` light

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0,
                             "socket.connection.setup.timeout.ms": 2000})
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise RuntimeError(f"Kafka broker exited during start-up:\n{tail(self.out_file)}")
            try:
                admin.list_topics(timeout=2)
                return
            except Exception as exc:  # noqa: BLE001 - KafkaException while the broker comes up
                last = exc
                time.sleep(0.2)
        raise TimeoutError(f"Kafka broker not ready after {timeout}s ({last}):\n{tail(self.out_file)}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the broker (controlled shutdown); SIGKILL it after ``timeout`` seconds."""
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        kill_quietly(pid, signal.SIGTERM)
        kill_quietly(pid, signal.SIGCONT)  # a paused broker must run to handle SIGTERM
        if not wait_dead([pid], timeout):
            kill_quietly(pid, signal.SIGKILL)
            wait_dead([pid], 10)
        self.pid_file.unlink(missing_ok=True)

    def kill9(self) -> None:
        """SIGKILL the broker, as a crash would; data stay in ``home`` for a restart."""
        pid = self.pid
        if pid is not None:
            kill_quietly(pid, signal.SIGKILL)
            wait_dead([pid], 10)

    def pause(self) -> None:
        """SIGSTOP the broker: it stops answering but keeps its sockets open."""
        pid = self.pid
        if pid is None:
            raise RuntimeError("Kafka broker is not running")
        os.kill(pid, signal.SIGSTOP)
        wait_stopped(pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT a paused broker."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            wait_stopped(pid, stopped=False)

    def server_log(self) -> str:
        """Return the text of ``logs/server.log`` ('' when missing)."""
        path = self.log_dir / "server.log"
        return path.read_text(errors="replace") if path.is_file() else ""


def main(argv: list[str] | None = None) -> int:
    """CLI: ``fetch`` the jars, or ``start``/``stop``/``status`` a broker in ``--home``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.kafka", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["fetch", "fetch-tools", "start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=cache_dir().parent / "broker")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=None, help="default: port + 1")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(ensure_jars())
        return 0
    if args.action == "fetch-tools":
        print(ensure_tools_jars())
        return 0
    broker = KafkaBroker(args.home, args.port, args.controller_port or args.port + 1)
    if args.action == "start":
        t0 = time.monotonic()
        broker.start(timeout=args.timeout)
        print(f"Kafka {KAFKA_VERSION} ready at {broker.bootstrap} in {time.monotonic() - t0:.1f}s")
    elif args.action == "stop":
        broker.stop(timeout=args.timeout)
    print(json.dumps(broker.status()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

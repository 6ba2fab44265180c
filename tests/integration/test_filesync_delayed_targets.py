"""Delayed file targets with a real broker: a deletion reaches the delayed target only after the delay,
the delay changes at run time (up, down, paused) through the control topic, and a mistaken deletion is
recovered from the delayed target.

When a receiver applied something is read from the kernel, not from the test's clock: a file's ctime
(and its directory's, for a deletion) is set when the receiver renamed or removed it, so
"ctime >= the time the change was sent + the delay" proves the change waited.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from common.config import load_config
from filesync import service
from filesync.receiver import Receiver
from ops.files_cmd import files

DELAY = 3.0
#: File times come from the kernel's coarse clock, which may trail time.time() by a tick (a few ms).
COARSE = 0.05


def _wait_for(cond: Any, timeout: float = 60.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def _write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


@pytest.fixture(params=["dr-host"])
def delayed_set(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A set with an undelayed local target t0 and a delayed target 'undo' whose receiver runs in a
    thread here, as 'ark files receive' would on its own host (or on this one: param 'localhost')."""
    name = f"s{uuid.uuid4().hex[:8]}"
    body = {"source": str(tmp_path / "src"), "state_dir": str(tmp_path / "state"), "ack_timeout_s": 60,
            "horizon_s": 0, "retention_ms": 3_600_000,
            "targets": [{"name": "t0", "path": str(tmp_path / "dst0")},
                        {"name": "undo", "host": request.param, "path": str(tmp_path / "undo"),
                         "delay_seconds": DELAY}]}
    conf = tmp_path / "ark.yaml"
    conf.write_text(yaml.safe_dump({"group": f"g{uuid.uuid4().hex[:6]}", "control_key": {"env": "ARK_CONTROL_KEY"},
                                    "kafka": {"bootstrap": kafka_bootstrap},
                                    "primary": {"name": "p", "engine": "postgresql"}, "files": {name: body}}))
    (tmp_path / "src").mkdir()
    cfg = load_config(conf)
    receiver = Receiver(cfg, name, cfg.files[name], "undo", service.state_dir(cfg, name))
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            receiver.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield cfg, name, conf, receiver
    finally:
        stop.set()
        thread.join(timeout=30)
        receiver.close()
    assert not errors


def test_delayed_target_keeps_a_deleted_file_for_the_delay(delayed_set: Any, tmp_path: Path) -> None:
    cfg, name, conf, receiver = delayed_set
    src, dst0, undo = tmp_path / "src", tmp_path / "dst0", tmp_path / "undo"
    for f in ("a.txt", "b.txt", "keep/c.txt"):
        _write(src / f, f)

    sent = time.time()
    report = service.sync(cfg, name)
    assert report.delayed == [("undo", DELAY)]  # not waited for
    assert (dst0 / "a.txt").read_text() == "a.txt"
    _wait_for(lambda: (undo / "keep/c.txt").exists())
    assert os.lstat(undo / "a.txt").st_ctime >= sent + DELAY - COARSE

    (src / "b.txt").unlink()
    sent = time.time()
    service.sync(cfg, name)
    assert not (dst0 / "b.txt").exists()  # the undelayed target deleted it at once
    _wait_for(lambda: not (undo / "b.txt").exists())
    assert os.lstat(undo).st_ctime >= sent + DELAY - COARSE  # the delete waited for the delay
    _wait_for(lambda: service.status(cfg, name).targets[1].in_flight == 0)
    assert service.verify(cfg, name) == []


def test_delay_changes_at_run_time_and_a_mistake_is_recovered(delayed_set: Any, tmp_path: Path) -> None:
    cfg, name, conf, receiver = delayed_set
    src, dst0, undo = tmp_path / "src", tmp_path / "dst0", tmp_path / "undo"
    _write(src / "precious/report.txt", "the only copy")
    _write(src / "other.txt", "other")
    service.sync(cfg, name)
    _wait_for(lambda: (undo / "precious/report.txt").exists())
    cli = CliRunner()

    # raised at run time: a mistaken deletion is now held for an hour
    res = cli.invoke(files, ["delay", name, "undo", "3600", "-c", str(conf)])
    assert res.exit_code == 0, res.output
    assert "retention" in res.output  # the topic keeps 1 h: shorter than 1 h + the 24 h margin
    _wait_for(lambda: receiver.delays.of("undo").seconds == 3600)
    shutil.rmtree(src / "precious")  # the mistake
    sent = time.time()
    service.sync(cfg, name)
    assert not (dst0 / "precious").exists()
    _wait_for(lambda: receiver.due_at is not None and receiver.due_at >= sent + 3000)
    _wait_for(lambda: time.time() > sent + DELAY + 1.0)  # the old delay has passed
    assert (undo / "precious/report.txt").read_text() == "the only copy"
    status = service.status(cfg, name)
    assert status.targets[1].delay.seconds == 3600 and status.targets[1].in_flight >= 2

    # recovery: pause the delayed target, copy back from it, then let it catch up
    res = cli.invoke(files, ["pause", name, "undo", "-c", str(conf)])
    assert res.exit_code == 0, res.output
    shutil.copytree(undo / "precious", src / "precious")
    res = cli.invoke(files, ["delay", name, "undo", "0", "-c", str(conf)])
    assert res.exit_code == 0, res.output
    _wait_for(lambda: receiver.delays.of("undo").seconds == 0 and receiver.due_at == float("inf"))
    assert (undo / "precious/report.txt").exists()  # paused: holds even with no delay
    service.sync(cfg, name)  # ships the restored files again
    assert (dst0 / "precious/report.txt").read_text() == "the only copy"
    res = cli.invoke(files, ["resume", name, "undo", "-c", str(conf)])
    assert res.exit_code == 0, res.output
    _wait_for(lambda: receiver.held is None and service.status(cfg, name).targets[1].in_flight == 0)
    # the deletion was applied, then the restore: the target ends like the source
    assert (undo / "precious/report.txt").read_text() == "the only copy"
    res = cli.invoke(files, ["status", name, "-c", str(conf)])
    assert res.exit_code == 0 and "undo" in res.output, res.output
    assert service.verify(cfg, name) == []


def test_bad_delay_commands(delayed_set: Any) -> None:
    _cfg, name, conf, _receiver = delayed_set
    cli = CliRunner()
    res = cli.invoke(files, ["delay", name, "nosuch", "5", "-c", str(conf)])
    assert res.exit_code != 0 and "no target 'nosuch'" in str(res.exception)
    res = cli.invoke(files, ["delay", name, "undo", "-5", "-c", str(conf)])
    assert res.exit_code != 0


def test_ark_check_warns_when_the_topic_drops_what_a_delayed_target_needs(delayed_set: Any) -> None:
    from ops.check import _files_retention

    cfg, name, _conf, _receiver = delayed_set
    findings = _files_retention(cfg)  # the topic keeps 1 h; 3 s of delay + the 24 h margin needs more
    assert len(findings) == 1 and not findings[0].fatal and "undo" in findings[0].what
    assert "retention_ms" in findings[0].fix


@pytest.mark.parametrize("delayed_set", ["localhost"], indirect=True)
def test_verify_compares_a_local_delayed_target_with_what_it_acknowledged(delayed_set: Any,
                                                                           tmp_path: Path) -> None:
    cfg, name, _conf, receiver = delayed_set
    src, undo = tmp_path / "src", tmp_path / "undo"
    _write(src / "a.txt", "a")
    _write(src / "b.txt", "b")
    service.sync(cfg, name)  # the local delayed target is not run by the one-shot sync: our thread applies it
    _wait_for(lambda: service.status(cfg, name).targets[1].in_flight == 0)
    assert service.verify(cfg, name) == []
    from filesync.delay import publish_pause

    publish_pause(cfg, name, "undo", True)  # held whatever the time verify takes
    _wait_for(lambda: receiver.delays.of("undo").paused)
    (src / "b.txt").unlink()
    service.sync(cfg, name)
    _wait_for(lambda: receiver.held is not None)
    found = service.verify(cfg, name)  # behind the source on purpose: in flight, not a difference
    assert [d for d in found if not d.warning] == []
    assert any("not applied yet" in d.what for d in found if d.warning)
    (undo / "a.txt").write_text("edited on the target")  # a real divergence of the delayed target
    found = service.verify(cfg, name)
    assert [(d.path, d.what.split()[0]) for d in found if not d.warning] == [("a.txt", "content")]

"""filesync under faults, with a real broker: kill -9 mid-transfer, corrupted records, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from common.config import ArkConfig, load_config
from filesync import service
from filesync.channel import SetChannel
from filesync.errors import NotConverged, SourceMissing, TargetFull
from filesync.sender import Sender

ROOT = Path(__file__).resolve().parents[2]


def make_config(bootstrap: str, tmp: Path, host: str = "localhost", **fs: Any) -> tuple[ArkConfig, str, Path]:
    name = f"s{uuid.uuid4().hex[:8]}"
    (tmp / "src").mkdir(exist_ok=True)
    body = {"source": str(tmp / "src"), "state_dir": str(tmp / "state"), "ack_timeout_s": 60,
            "targets": [{"name": "t0", "host": host, "path": str(tmp / "dst0")}], **fs}
    conf = tmp / "ark.yaml"
    conf.write_text(yaml.safe_dump({"group": f"g{uuid.uuid4().hex[:6]}", "control_key": {"env": "ARK_CONTROL_KEY"},
                                                 "kafka": {"bootstrap": bootstrap},
                                    "primary": {"name": "p", "engine": "postgresql"}, "files": {name: body}}))
    return load_config(conf), name, conf


def ark_files(*args: str) -> subprocess.Popen[bytes]:
    code = "import sys; from ops.files_cmd import files; files(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_for(cond: Any, timeout: float = 60.0, step: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def staging(dst: Path) -> bool:
    return dst.exists() and any(".arktmp-" in p.name for p in dst.iterdir())


def test_kill9_sender_mid_transfer_then_restart_converges(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name, conf = make_config(kafka_bootstrap, tmp_path, host="elsewhere", message_bytes=65536)
    big = tmp_path / "src/big.bin"
    big.write_bytes(os.urandom(24 << 20))
    dst = tmp_path / "dst0"
    stop = threading.Event()
    recv = threading.Thread(target=service.receive, args=(cfg, name, "t0", stop), daemon=True)
    recv.start()
    try:
        sender = ark_files("sync", name, "-c", str(conf))
        wait_for(lambda: staging(dst))
        sender.send_signal(signal.SIGKILL)
        sender.wait()
        assert not (dst / "big.bin").exists()  # never a half-written file under the real name
        report = service.sync(cfg, name)
        assert not report.nacks
        wait_for(lambda: (dst / "big.bin").exists())
        assert (dst / "big.bin").read_bytes() == big.read_bytes()
        assert not staging(dst)
    finally:
        stop.set()
        recv.join(timeout=30)


def test_kill9_receiver_mid_transfer_then_restart_converges(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name, conf = make_config(kafka_bootstrap, tmp_path, host="elsewhere", message_bytes=65536)
    dst = tmp_path / "dst0"
    big = tmp_path / "src/big.bin"
    big.write_bytes(b"old version\n" * 1000)
    receiver = ark_files("receive", name, "--target", "t0", "-c", str(conf))
    sender = Sender(cfg, name, cfg.files[name], service.state_dir(cfg, name))
    try:
        assert not sender.wait(sender.run_pass().pass_id, 60)
        old = (dst / "big.bin").read_bytes()
        # The kill must land while the receiver writes its temp file. The sender's pass runs in a
        # thread so that the watch starts at once; a fast machine may still finish a transfer before
        # the poll sees it, so try a few fresh versions until one is caught mid-write.
        for _attempt in range(5):
            big.write_bytes(os.urandom(48 << 20))
            reports: list[Any] = []
            pusher = threading.Thread(target=lambda out=reports: out.append(sender.run_pass()))
            pusher.start()
            deadline = time.monotonic() + 60
            while not staging(dst) and time.monotonic() < deadline:
                if not pusher.is_alive() and (dst / "big.bin").exists() \
                        and (dst / "big.bin").stat().st_size == big.stat().st_size:
                    break  # already applied: try again with a new version
                time.sleep(0.002)
            caught = staging(dst)
            if caught:
                old = (dst / "big.bin").read_bytes()  # what the target holds while the new one streams
                receiver.send_signal(signal.SIGKILL)
                receiver.wait()
            pusher.join()
            if caught:
                break
            assert not sender.wait(reports[0].pass_id, 60)
        else:
            pytest.skip("the transfer always finished before it could be interrupted")
        report = reports[0]
        assert (dst / "big.bin").read_bytes() == old  # the old version stays whole
        receiver = ark_files("receive", name, "--target", "t0", "-c", str(conf))
        assert not sender.wait(report.pass_id, 60)
        assert (dst / "big.bin").read_bytes() == big.read_bytes()
        assert not staging(dst)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
        sender.close()


def test_kill9_delayed_receiver_while_it_holds_a_deletion(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A delayed receiver holds the next record in memory only (nothing is spooled): killed while it
    waits, the restarted one re-reads the record from Kafka and still applies it no earlier than
    its publication + the delay. The kernel's ctime of the target directory says when it did."""
    delay, coarse = 6.0, 0.05
    name = f"s{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "ark.yaml"
    conf.write_text(yaml.safe_dump({"group": f"g{uuid.uuid4().hex[:6]}", "control_key": {"env": "ARK_CONTROL_KEY"},
                                    "kafka": {"bootstrap": kafka_bootstrap},
                                    "primary": {"name": "p", "engine": "postgresql"}, "files": {name: {
                                        "source": str(tmp_path / "src"), "state_dir": str(tmp_path / "state"),
                                        "horizon_s": 0, "targets": [{"name": "t0", "host": "elsewhere",
                                                                     "path": str(tmp_path / "dst0"),
                                                                     "delay_seconds": delay}]}}}))
    cfg = load_config(conf)
    src, dst = tmp_path / "src", tmp_path / "dst0"
    src.mkdir()
    for f in ("a.txt", "b.txt"):
        (src / f).write_text(f)
    receiver = ark_files("receive", name, "--target", "t0", "-c", str(conf))
    try:
        assert service.sync(cfg, name).delayed == [("t0", delay)]  # returns without waiting
        wait_for(lambda: (dst / "b.txt").exists(), timeout=60, step=0.05)
        (src / "a.txt").unlink()
        sent = time.time()
        service.sync(cfg, name)
        wait_for(lambda: time.time() > sent + 1.5, step=0.05)  # the receiver has read the Delete by now
        receiver.send_signal(signal.SIGKILL)
        receiver.wait()
        killed_at = time.time()
        if killed_at < sent + delay - 1:  # (a slower machine: the point is then only the ctime below)
            assert (dst / "a.txt").exists()
        receiver = ark_files("receive", name, "--target", "t0", "-c", str(conf))
        wait_for(lambda: not (dst / "a.txt").exists(), timeout=60, step=0.02)
        assert os.lstat(dst).st_ctime >= sent + delay - coarse
        assert (dst / "b.txt").read_text() == "b.txt" and not staging(dst)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


def test_corrupted_record_is_detected_and_repaired(kafka_bootstrap: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg, name, _ = make_config(kafka_bootstrap, tmp_path)
    data = os.urandom(3 << 20)
    (tmp_path / "src/f.bin").write_bytes(data)
    corrupted: list[int] = []
    original = SetChannel._produce

    def flaky(self: SetChannel, partition: int, value: bytes, headers: list[Any], ts_ms: int) -> None:
        if partition == 0 and not corrupted and len(value) > 100_000:
            corrupted.append(len(value))
            value = value[:5000] + bytes([value[5000] ^ 0xFF]) + value[5001:]  # one bit flip in a chunk
        original(self, partition, value, headers, ts_ms)

    monkeypatch.setattr(SetChannel, "_produce", flaky)
    caplog.set_level("WARNING")
    service.sync(cfg, name)
    assert corrupted
    assert "CRC-32C" in caplog.text  # detected by the envelope's checksum, then re-requested
    assert (tmp_path / "dst0/f.bin").read_bytes() == data
    assert service.verify(cfg, name) == []


def test_missing_source_dir_is_a_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name, conf = make_config(kafka_bootstrap, tmp_path)
    os.rmdir(tmp_path / "src")
    with pytest.raises(SourceMissing) as err:
        service.sync(cfg, name)
    assert "does not exist" in err.value.message and "source.path" in err.value.fix
    from ops.cli import cli

    res = CliRunner().invoke(cli, ["-c", str(conf), "files", "sync", name])
    assert res.exit_code != 0 and "fix:" in res.output and "Traceback" not in res.output


def test_bad_pattern_fails_at_load(tmp_path: Path) -> None:
    conf = tmp_path / "ark.yaml"
    conf.write_text(yaml.safe_dump({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                                    "primary": {"name": "p", "engine": "postgresql"}, "files": {
        "s": {"source": "/srv", "targets": [{"name": "t", "path": "/dst"}], "exclude": ["bad\\"]}}}))
    from ops.cli import cli

    res = CliRunner().invoke(cli, ["-c", str(conf), "files", "sync", "s"])
    assert res.exit_code != 0
    assert "not valid gitignore syntax" in res.output and "fix:" in res.output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_unreadable_source_entries_are_reported_not_fatal() -> None:
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="ark-perm-"))  # pytest's tmp dirs are closed to other users
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    (src / "secret.txt").write_text("secret")
    os.chmod(src / "secret.txt", 0o000)
    os.chmod(tmp_path, 0o755)
    from common.config_files import FileSetConfig
    from filesync.scanner import scan

    fs = FileSetConfig.model_validate({"source": str(src), "targets": [{"name": "t", "path": "/x"}]})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and scans
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = scan(fs)
            os.write(write_end, repr((sorted(result.entries), result.errors)).encode())
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            os.write(write_end, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    out = os.read(read_end, 65536).decode()
    subprocess.run(["rm", "-rf", str(tmp_path)])
    assert "['.', 'ok.txt']" in out and "secret.txt" in out and "Permission denied" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_target_disk_is_a_clear_error_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name, _ = make_config(kafka_bootstrap, tmp_path)
    dst = tmp_path / "dst0"
    dst.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(dst)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (tmp_path / "src/small.txt").write_text("version 1\n")
        service.sync(cfg, name)
        (tmp_path / "src/small.txt").write_text("version 2\n")
        (tmp_path / "src/big.bin").write_bytes(os.urandom(3 << 20))
        with pytest.raises((TargetFull, NotConverged)) as err:
            service.sync(cfg, name)
        assert "no space" in str(err.value) and "free space" in str(err.value)
        assert (dst / "small.txt").read_text() in ("version 1\n", "version 2\n")  # whole, never torn
        assert not (dst / "big.bin").exists() and not staging(dst)
        subprocess.run(["mount", "-o", "remount,size=16m", str(dst)], check=True)
        service.sync(cfg, name)
        assert service.verify(cfg, name) == []
    finally:
        subprocess.run(["umount", "-l", str(dst)])

"""filesync end to end with a real broker: fidelity, deltas, deletions, renames, exclusions, watch, divergence."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from common.config import ArkConfig, parse_config
from filesync import service


def make_config(bootstrap: str, tmp: Path, targets: int = 1, **fs: Any) -> tuple[ArkConfig, str]:
    name = f"s{uuid.uuid4().hex[:8]}"
    (tmp / "src").mkdir(exist_ok=True)
    body = {"source": str(tmp / "src"), "state_dir": str(tmp / "state"), "ack_timeout_s": 60,
            "targets": [{"name": f"t{i}", "path": str(tmp / f"dst{i}")} for i in range(targets)], **fs}
    return parse_config({"group": f"g{uuid.uuid4().hex[:6]}", "control_key": {"env": "ARK_CONTROL_KEY"},
                                      "kafka": {"bootstrap": bootstrap},
                         "primary": {"name": "p", "engine": "postgresql"}, "files": {name: body}}), name


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def lstat_view(root: Path) -> dict[str, tuple[Any, ...]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            xattrs = tuple(sorted((n, os.getxattr(p, n, follow_symlinks=False))
                                  for n in os.listxattr(p, follow_symlinks=False))) if not p.is_symlink() else ()
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                             st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) or True else 0,
                                             st.st_rdev, os.readlink(p) if p.is_symlink() else "", xattrs,
                                             p.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="devices, owners and ACLs need root")
def test_every_file_type_and_attribute_round_trips(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path, targets=2)
    src = tmp_path / "src"
    write(src / "plain.txt", "hello\n")
    write(src / "dir/sub/deep.bin", os.urandom(300_000))
    os.chmod(src / "dir/sub/deep.bin", 0o4751)
    os.chown(src / "dir/sub/deep.bin", 1234, 4321)
    os.chmod(src / "dir/sub/deep.bin", 0o4751)  # chown cleared setuid
    write(src / "sticky/x", "x")
    os.chmod(src / "sticky", 0o1777)
    os.chmod(src / "plain.txt", 0o2640)
    os.chown(src / "plain.txt", 0, 65534)  # group by name (nogroup) and number
    os.chmod(src / "plain.txt", 0o2640)
    os.symlink("plain.txt", src / "rel-link")
    os.symlink("/nonexistent/target", src / "dangling")
    os.link(src / "plain.txt", src / "dir/hard-to-plain")
    os.mkfifo(src / "fifo")
    os.mknod(src / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "blockdev", 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.setxattr(src / "plain.txt", "user.checksum", b"abc")
    os.setxattr(src / "dir", "user.dirattr", b"1")
    acl = subprocess.run(["setfacl", "-m", "u:nobody:rw,d:u:nobody:r", str(src / "dir")], capture_output=True)
    os.utime(src / "dir/sub/deep.bin", ns=(1, 1_600_000_000_123_456_789))
    write(src / "empty", b"")

    report = service.sync(cfg, name)
    assert report.changes > 0 and not report.nacks
    want = lstat_view(src)
    for i in range(2):
        dst = tmp_path / f"dst{i}"
        assert lstat_view(dst) == want
        assert os.lstat(dst / "plain.txt").st_ino == os.lstat(dst / "dir/hard-to-plain").st_ino
        assert os.lstat(dst / "dir/sub/deep.bin").st_mtime_ns == 1_600_000_000_123_456_789
        if acl.returncode == 0:
            assert "user:nobody:rw-" in subprocess.run(["getfacl", "-p", str(dst / "dir")], capture_output=True,
                                                       text=True).stdout
    assert service.verify(cfg, name) == []
    # a second pass ships nothing
    assert service.sync(cfg, name).changes == 0


def test_middle_edit_of_large_file_ships_little(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path)
    big = write(tmp_path / "src/big.bin", os.urandom(6 << 20))
    first = service.sync(cfg, name)
    assert first.literal_bytes == 6 << 20
    with open(big, "r+b") as fh:
        fh.seek(3 << 20)
        fh.write(b"edited in the middle")
    second = service.sync(cfg, name)
    assert 0 < second.literal_bytes < 64 * 1024, second.literal_bytes
    assert (tmp_path / "dst0/big.bin").read_bytes() == big.read_bytes()


def test_deletions_renames_and_exclusions(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path, exclude=["*.log", "cache/"], include=["keep.log"])
    src, dst = tmp_path / "src", tmp_path / "dst0"
    write(src / "a/one.bin", os.urandom(200_000))
    write(src / "a/two.txt", "two")
    write(src / "gone/x", "x")
    write(src / "noise.log", "excluded")
    write(src / "keep.log", "re-included")
    write(src / "cache/c", "excluded dir")
    service.sync(cfg, name)
    assert sorted(p.name for p in dst.rglob("*")) == ["a", "gone", "keep.log", "one.bin", "two.txt", "x"]

    (src / "a/one.bin").rename(src / "moved.bin")
    (src / "gone/x").unlink()
    (src / "gone").rmdir()
    report = service.sync(cfg, name)
    assert report.literal_bytes == 0  # the rename shipped no content
    assert not (dst / "gone").exists() and not (dst / "a/one.bin").exists()
    assert (dst / "moved.bin").read_bytes() == (src / "moved.bin").read_bytes()
    assert service.verify(cfg, name) == []


def test_target_divergence_is_detected_and_resynced(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst0"
    write(src / "f.bin", os.urandom(500_000))
    write(src / "g.txt", "g")
    service.sync(cfg, name)
    with open(dst / "f.bin", "r+b") as fh:  # a local edit on the target
        fh.write(b"local edit")
    (dst / "g.txt").unlink()  # lost state on the target
    with open(src / "f.bin", "r+b") as fh:  # and a change on the source
        fh.seek(250_000)
        fh.write(b"source edit")
    report = service.sync(cfg, name)
    assert report.literal_bytes < 100_000
    assert service.verify(cfg, name) == []


def test_watch_mode_ships_changes_in_real_time(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg, name = make_config(kafka_bootstrap, tmp_path, debounce_ms=200, horizon_s=0)
    src, dst = tmp_path / "src", tmp_path / "dst0"
    write(src / "first.txt", "1")
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.serve(cfg, name, stop, watch=True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: (dst / "first.txt").exists())
        write(src / "sub/new.txt", "created while watching")
        (src / "first.txt").unlink()
        _wait_for(lambda: (dst / "sub/new.txt").exists() and not (dst / "first.txt").exists())
        assert (dst / "sub/new.txt").read_text() == "created while watching"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors


def test_cli_sync_status_verify(kafka_bootstrap: str, tmp_path: Path) -> None:
    from ops.files_cmd import files

    cfg, name = make_config(kafka_bootstrap, tmp_path)
    write(tmp_path / "src/x.txt", "x")
    fs = cfg.files[name].model_dump(mode="json", exclude_none=True)
    import yaml

    conf = tmp_path / "ark.yaml"
    conf.write_text(yaml.safe_dump({"group": cfg.group, "control_key": {"env": "ARK_CONTROL_KEY"},
                                    "kafka": {"bootstrap": kafka_bootstrap},
                                    "primary": {"name": "p", "engine": "postgresql"}, "files": {name: fs}}))
    runner = CliRunner()
    res = runner.invoke(files, ["verify", name, "-c", str(conf)])
    assert res.exit_code != 0
    res = runner.invoke(files, ["sync", name, "-c", str(conf)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(files, ["verify", name, "-c", str(conf)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(files, ["status", name, "-c", str(conf)])
    assert res.exit_code == 0 and "t0" in res.output


def _wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_consistency_points_pair_each_pass_with_redo_offsets(kafka_bootstrap: str, tmp_path: Path) -> None:
    from common.kafka import ensure_topic, make_producer
    from ops.files_cmd import files
    from schemas.topics import redo_topic

    cfg, name = make_config(kafka_bootstrap, tmp_path, consistency_points=True)
    redo = redo_topic(cfg.group)
    first = service.sync(cfg, name)  # no database yet: no redo topic, no point, the pass still runs
    assert (first.redo_start, first.redo_end) == (None, None)

    ensure_topic(cfg.kafka, redo)
    producer = make_producer(cfg.kafka)

    def commit_transactions(n: int) -> None:  # stands in for the capture: only the offsets matter here
        for i in range(n):
            producer.produce(redo, value=f"txn {i}".encode())
        assert producer.flush(30) == 0

    commit_transactions(5)
    write(tmp_path / "src/a.txt", "a")
    second = service.sync(cfg, name)
    assert (second.redo_start, second.redo_end) == (5, 5)
    commit_transactions(3)
    write(tmp_path / "src/b.txt", "b")
    third = service.sync(cfg, name)
    assert (third.redo_start, third.redo_end) == (8, 8)

    status = service.status(cfg, name)
    applied = status.targets[0].applied
    assert applied is not None and applied["pass_id"] == third.pass_id
    assert (applied["redo_start"], applied["redo_end"]) == (8, 8) and applied["applied_us"] > 0
    assert status.last_pass is not None and (status.last_pass.redo_start, status.last_pass.redo_end) == (8, 8)
    import yaml

    conf = tmp_path / "ark.yaml"
    conf.write_text(yaml.safe_dump({"group": cfg.group, "control_key": {"env": "ARK_CONTROL_KEY"},
                                    "kafka": {"bootstrap": kafka_bootstrap},
                                    "primary": {"name": "p", "engine": "postgresql"},
                                    "files": {name: cfg.files[name].model_dump(mode="json", exclude_none=True)}}))
    res = CliRunner().invoke(files, ["status", name, "-c", str(conf)])
    assert res.exit_code == 0 and "8..8" in res.output, res.output

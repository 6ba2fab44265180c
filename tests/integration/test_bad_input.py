"""Bad input gets a one-line error that names the fix, a non-zero exit, no traceback, and loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.ports import free_port
from tests.support.replication import sql, wait_for


def _assert_clean_failure(res, *needles: str, secret: str | None = None) -> None:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    assert "error:" in res.stderr and "fix:" in res.stderr, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"
    if secret:
        assert secret not in out


@pytest.mark.parametrize("text, needle", [
    ("group: g\nprimary: [1, 2\n", "not valid YAML"),
    ("group: g\n", "primary"),
    ("group: 'a b'\nprimary: {name: p, engine: postgresql}\n", "group"),
    ("group: g\nprimary: {name: p, engine: postgresql, port: 99999}\n", "primary.port"),
])
def test_malformed_config(make_group, tmp_path: Path, text: str, needle: str) -> None:
    group = make_group()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    _assert_clean_failure(group.ark("check", config=bad), needle)


def test_missing_config_file(make_group, tmp_path: Path) -> None:
    group = make_group()
    _assert_clean_failure(group.ark("status", config=tmp_path / "none.yaml"), "does not exist", "ark init")


def test_unreachable_broker(make_group) -> None:
    group = make_group()
    group.write_config(kafka={"bootstrap": f"127.0.0.1:{free_port()}"})
    _assert_clean_failure(group.ark("capture", timeout=120), "unreachable", "ark broker status")


def test_wrong_password_names_the_fix_and_never_the_secret(make_group, pg_factory) -> None:
    group = make_group()
    secured = pg_factory("secured", password="right-password-1")
    secured.create_database(group.dbname)
    cfg = group.write_config(primary={"name": "primary", "engine": "postgresql", "host": "127.0.0.1",
                                      "port": secured.port, "dbname": group.dbname, "user": "postgres",
                                      "password": {"env": "ARK_TEST_PW"}})
    res = group.ark("check", env={"ARK_TEST_PW": "wrong-password-xyz"}, config=cfg)
    _assert_clean_failure(res, "password", secret="wrong-password-xyz")
    res = group.ark("sync", "standby", env={"ARK_TEST_PW": "wrong-password-xyz"}, config=cfg)
    _assert_clean_failure(res, secret="wrong-password-xyz")
    # Nothing half-applied on the standby: no state row was written.
    assert not sql(group.standby("standby").dsn,
                   "SELECT 1 FROM information_schema.tables WHERE table_schema = 'ark' AND table_name = 'apply_state'"
                   ) or not sql(group.standby("standby").dsn, "SELECT 1 FROM ark.apply_state")


def test_table_without_key_is_named_and_handled_by_the_keyless_policy(make_group) -> None:
    """Issue 18: a table without a key is no refusal. ark check names it and what Ark will do; the capture sets it
    up (REPLICA IDENTITY FULL under the default policy) and says so; the application's writes keep working."""
    group = make_group()
    sql(group.primary_dsn, "CREATE TABLE nokey (a int, b text)")
    res = group.ark("check", env={"COLUMNS": "2000"})  # rich wraps table cells at the terminal width
    out = res.stdout + res.stderr
    assert "nokey" in out and "REPLICA IDENTITY FULL" in out and "Traceback" not in res.stderr
    assert res.returncode == 0, out  # a warning, not a failure
    capture = group.start("capture")
    log = group.workdir / "logs" / "capture.log"
    wait_for(lambda: "set-up: public.nokey: replica identity full" in log.read_text(errors="replace"), 60,
             "the capture to say what it did to nokey")
    sql(group.primary_dsn, "INSERT INTO nokey VALUES (1, 'a'), (1, 'a')")
    sql(group.primary_dsn, "UPDATE nokey SET b = 'still writable'")
    sql(group.primary_dsn, "DELETE FROM nokey")
    capture.stop()


def test_wal_level_not_logical(make_group, pg_factory) -> None:
    group = make_group()
    replica = pg_factory("walreplica", extra_conf={"wal_level": "replica"})
    replica.create_database(group.dbname)
    cfg = group.write_config(primary={"name": "primary", "engine": "postgresql", "host": "127.0.0.1",
                                      "port": replica.port, "dbname": group.dbname, "user": "postgres"})
    res = group.ark("check", config=cfg)
    assert res.returncode != 0 and "wal_level" in res.stdout + res.stderr and "Traceback" not in res.stderr
    _assert_clean_failure(group.ark("capture", config=cfg, timeout=60), "wal_level")
    _assert_clean_failure(group.ark("sync", "standby", config=cfg, timeout=60), "wal_level")


def test_apply_before_sync_says_sync_first(make_group) -> None:
    group = make_group()
    res = group.ark("apply", "standby", timeout=60)
    _assert_clean_failure(res, "ark sync standby")


def test_unknown_standby(make_group) -> None:
    group = make_group()
    _assert_clean_failure(group.ark("apply", "nobody"), "no node named", "standby")

"""The config model: validation with the key and the fix, secrets never echoed, cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config, parse_config
from common.errors import ConfigError
from ops.templates import example_config

PG = {"engine": "postgresql"}
MIN = {"group": "g1", "control_key": {"env": "ARK_CONTROL_KEY"},
       "primary": {"name": "p", **PG}, "standbys": [{"name": "s", **PG}]}


def test_example_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "ark.yaml"
    path.write_text(example_config(str(tmp_path / "key")))
    cfg = load_config(path)
    assert cfg.group == "bank" and [s.name for s in cfg.standbys] == ["node2", "node3-delayed"]
    assert cfg.primary.slot_for(cfg.group) == "ark_bank" and cfg.max_delay_seconds == 3600  # type: ignore[attr-defined]


@pytest.mark.parametrize("doc, needle", [
    ({**MIN, "group": "bad group!"}, "group"),
    ({**MIN, "primary": {"name": "p", "port": 70000, **PG}}, "primary.port"),
    ({**MIN, "standbys": [{"name": "p", **PG}]}, "unique"),
    ({**MIN, "standbys": [{"name": "s", "delay_seconds": -1, **PG}]}, "standbys.0.delay_seconds"),
    ({**MIN, "standbys": [{"name": "s", "engine": "oracle"}]}, "cannot run on this machine"),
    ({**MIN, "primary": {"name": "p"}}, "primary.engine is missing"),
    ({**MIN, "primary": {"name": "p", "engine": "db2"}}, "unknown engine 'db2'"),
    ({**MIN, "standbys": [{"name": "s", "slot": "x", **PG}]}, "standbys.0.slot"),
    ({**MIN, "surprise": 1}, "surprise"),
    ({**MIN, "kafka": {"client": {"sasl.password": "x"}}}, "looks like a secret"),
    ({"group": "g", "control_key": {"env": "X"}}, "primary"),
    ({k: v for k, v in MIN.items() if k != "control_key"}, "control_key: missing: every control record"),
    ([1, 2], "mapping"),
])
def test_invalid_configs_name_the_key(doc: object, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc, Path("x.yaml"))
    assert needle in err.value.message and err.value.fix


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("group: g\nprimary:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(path)


def test_missing_file_says_ark_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "ark init" in err.value.fix


def test_secret_from_env_is_resolved_only_on_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config({**MIN, "primary": {"name": "p", "password": {"env": "ARK_T_PW"}, **PG}})
    monkeypatch.delenv("ARK_T_PW", raising=False)
    with pytest.raises(ConfigError) as err:
        cfg.primary.connect_kwargs()  # type: ignore[attr-defined]
    assert "ARK_T_PW" in err.value.message
    monkeypatch.setenv("ARK_T_PW", "hunter2-secret")
    assert cfg.primary.connect_kwargs()["password"] == "hunter2-secret"  # type: ignore[attr-defined]
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.primary.describe()


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t\n")
    cfg = parse_config({**MIN, "primary": {"name": "p", "password": {"file": str(secret)}, **PG}})
    assert cfg.primary.connect_kwargs()["password"] == "s3cr3t"  # type: ignore[attr-defined]
    bad = parse_config({**MIN, "primary": {"name": "p", "password": {"file": str(tmp_path / 'none')}, **PG}})
    with pytest.raises(ConfigError, match="cannot read secret file"):
        bad.primary.connect_kwargs()  # type: ignore[attr-defined]


def test_secret_ref_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config({**MIN, "primary": {"name": "p", "password": {}, **PG}})


@pytest.mark.parametrize("retention_h, delay_s, warns", [(168, 0, False), (24, 3600, True), (30, 3600, False)])
def test_retention_warning(retention_h: float, delay_s: float, warns: bool) -> None:
    cfg = parse_config({**MIN, "kafka": {"redo_retention_hours": retention_h},
                        "standbys": [{"name": "s", "delay_seconds": delay_s, **PG}]})
    assert (cfg.retention_warning() is not None) == warns


def test_config_is_frozen() -> None:
    cfg = parse_config(MIN)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        cfg.group = "other"  # type: ignore[misc]


def test_control_key_must_be_long_enough(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    cfg = parse_config({**MIN, "control_key": {"file": str(short)}})
    with pytest.raises(ConfigError, match="at least 32") as err:
        cfg.control_key_bytes()
    assert "ark keygen" in err.value.fix and "abc" not in err.value.message


def test_keygen_writes_a_private_key(tmp_path: Path) -> None:
    from ops.keys import write_key

    path = tmp_path / "dir" / "g.key"
    write_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    cfg = parse_config({**MIN, "control_key": {"file": str(path)}})
    assert len(cfg.control_key_bytes()) == 64


def test_a_standby_may_be_of_another_engine() -> None:
    cfg = parse_config({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                        "primary": {"name": "p", "engine": "postgresql"},
                        "standbys": [{"name": "m", "engine": "mariadb"}]})
    assert cfg.standbys[0].engine == "mariadb" and cfg.standbys[0].port == 3306

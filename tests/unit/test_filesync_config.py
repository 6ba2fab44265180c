"""FileSetConfig validation and the scanner's selection (real files in temp dirs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import parse_config
from common.config_files import FileSetConfig
from common.errors import ConfigError
from filesync.errors import SourceMissing
from filesync.scanner import scan


def cfg(**files: object) -> dict[str, object]:
    return {"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
            "primary": {"name": "p", "engine": "postgresql"}, "files": files}


def test_valid_set_with_shorthand_and_schedule() -> None:
    c = parse_config(cfg(docs={"source": "/srv/docs", "targets": [{"name": "dr", "host": "n2", "path": "/srv/docs"}],
                               "exclude": ["*.tmp", "cache/"], "include": ["cache/keep"],
                               "schedule": {"cron": "*/5 * * * *"}, "watch": True}))
    fs = c.files["docs"]
    assert fs.source.path == "/srv/docs" and fs.source.host == "localhost"
    assert fs.patterns() == ["*.tmp", "cache/", "!cache/keep"]


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"s": {"source": "/a", "targets": [{"name": "t", "path": "/b"}], "exclude": ["a\\"]}}, "not valid gitignore"),
        ({"s": {"source": "/a", "targets": [{"name": "t", "path": "/b"}], "exclude": ["!x"]}}, "include"),
        ({"s": {"source": "/a", "targets": [{"name": "t", "path": "/b"}], "schedule": {"cron": "61 * * * *"}}}, "cron"),
        ({"s": {"source": "/a", "targets": [{"name": "t", "path": "/b"}, {"name": "t", "path": "/c"}]}}, "unique"),
        ({"s": {"source": "rel", "targets": [{"name": "t", "path": "/b"}]}}, "absolute"),
        ({"s": {"source": "/a", "targets": []}}, "targets"),
        ({"s": {"source": "/a", "targets": [{"name": "t", "path": "/b"}], "chunk_avg_bytes": 5000}}, "power of two"),
        ({"s": {"source": "/a", "targets": [{"name": "t", "path": "/b"}], "bogus": 1}}, "bogus"),
    ],
)
def test_bad_config_fails_at_load_naming_the_key(files: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(cfg(**files))
    assert needle in str(err.value)
    assert "files.s" in str(err.value)


def _set(src: Path, **kw: object) -> FileSetConfig:
    return FileSetConfig.model_validate({"source": str(src), "targets": [{"name": "t", "path": "/nonexistent"}], **kw})


def test_scan_excludes_includes_and_hardlinks(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    for name in ("a.txt", "b.tmp", "cache/x", "cache/keep"):
        (tmp_path / name).write_text(name)
    os.link(tmp_path / "a.txt", tmp_path / "z-link")
    os.symlink("/etc/passwd", tmp_path / "sym")
    os.chmod(tmp_path, 0o750)
    os.setxattr(tmp_path, "user.root-attr", b"r")
    result = scan(_set(tmp_path, exclude=["*.tmp", "cache/*", "."], include=["cache/keep"]))
    # the root is an entry like any other ("."), and an exclude pattern never removes it
    assert sorted(result.entries) == [".", "a.txt", "cache", "cache/keep", "sym", "z-link"]
    root = result.entries["."].meta
    assert root.kind == "DIR" and root.mode == 0o750 and ("user.root-attr", b"r") in root.xattrs
    assert root.mtime_ns == os.lstat(tmp_path).st_mtime_ns
    assert result.entries["z-link"].meta.kind == "HARDLINK" and result.entries["z-link"].meta.link == "a.txt"
    assert result.entries["sym"].meta.kind == "SYMLINK" and result.entries["sym"].meta.link == "/etc/passwd"


def test_scan_missing_source_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing) as err:
        scan(_set(tmp_path / "nope"))
    assert "does not exist" in err.value.message and err.value.fix

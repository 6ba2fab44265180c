"""One exit-code table: every error class uses a code from it, no code means two things, and the README's
table is the module's."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from common.errors import ArkError
from common.exit_codes import MEANING, ExitCode, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def _load_everything() -> None:
    for package in ("common", "producers", "consumers", "filesync", "ops"):
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_error_uses_a_code_of_the_table() -> None:
    _load_everything()
    for cls in _subclasses(ArkError):
        assert isinstance(cls.exit_code, ExitCode), f"{cls.__module__}.{cls.__name__} uses {cls.exit_code!r}"


def test_every_code_has_one_meaning_and_the_readme_shows_the_table() -> None:
    assert set(MEANING) == set(ExitCode)
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    assert markdown_table() in (ROOT / "README.md").read_text()

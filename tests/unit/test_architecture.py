"""The dependency direction of ARCHITECTURE.md, enforced by import-linter from pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contract_holds() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_schemas_import_nothing_of_ark() -> None:
    for path in (ROOT / "schemas").glob("*.py"):
        text = path.read_text()
        for pkg in ("common", "producers", "consumers", "failover", "filesync", "ops", "deploy"):
            assert f"from {pkg}" not in text and f"import {pkg}" not in text, f"{path.name} imports {pkg}"


def test_every_engine_package_is_protected() -> None:
    """A new engine package must be added to the protected contract (pyproject.toml) too."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    protected = next(c for c in contracts if c["type"] == "protected")["protected_modules"]
    packages = sorted(f"{side}.{p.name}" for side in ("producers", "consumers") for p in (ROOT / side).iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    assert packages and sorted(protected) == packages


def test_no_code_outside_the_engine_packages_names_an_engine() -> None:
    """Runners, ops/ and the generic config go through the registry (common/engines)."""
    from common import engines

    names = [*engines.names(), *engines.PLANNED]
    allowed = {ROOT / "common" / "engines", ROOT / "ops" / "demo.py", ROOT / "ops" / "templates.py"}
    for side in ("producers", "consumers"):
        allowed |= {p for p in (ROOT / side).iterdir() if p.is_dir()}
    offenders = []
    for package in ("common", "producers", "consumers", "failover", "filesync", "ops"):
        for path in (ROOT / package).rglob("*.py"):
            if any(path == a or a in path.parents for a in allowed):
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if f'"{n}"' in text or f"'{n}'" in text]
    assert offenders == []

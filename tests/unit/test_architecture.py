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
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_schemas_import_nothing_of_ark() -> None:
    for path in (ROOT / "schemas").glob("*.py"):
        text = path.read_text()
        for pkg in ("common", "producers", "consumers", "failover", "filesync", "ops", "deploy"):
            assert f"from {pkg}" not in text and f"import {pkg}" not in text, f"{path.name} imports {pkg}"

"""ops.build_hot --asan: finds the sanitizer runtime or says which compiler lacks it, and never leaves ASan modules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ops import build_hot


def test_a_compiler_without_libasan_is_named() -> None:
    # `true` prints nothing for -print-file-name: as a compiler that does not know the library (gcc echoes its name).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CC", "true")
        with pytest.raises(FileNotFoundError, match="true has no libasan.so"):
            build_hot.asan_runtime()


def test_the_normal_modules_are_rebuilt_even_when_the_sanitized_tests_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[tuple[str, ...]] = []

    def build(flags: tuple[str, ...] = ("-O2",)) -> list[Path]:
        builds.append(flags)
        return []

    monkeypatch.setattr(build_hot, "asan_runtime", lambda: "/usr/lib/libasan.so")
    monkeypatch.setattr(build_hot, "build", build)
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: subprocess.CompletedProcess(a, 1))
    assert build_hot.run_sanitized(1) == 1
    assert builds == [build_hot.SANITIZE_FLAGS, ("-O2",)]


def test_a_sanitizer_finding_stops_the_run() -> None:
    # Without -fno-sanitize-recover, UBSan prints and carries on: the run would pass with a finding in its output.
    assert "-fno-sanitize-recover=undefined" in build_hot.SANITIZE_FLAGS
    assert all(Path(build_hot.ROOT / t).exists() for t in build_hot.ASAN_TESTS)

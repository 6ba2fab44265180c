"""Build Ark's compiled hot path in place: ``python -m ops.build_hot``.

Every ``_<name>.c`` in Ark's packages is an optional C module, built next to its source: today the redo codec
(``schemas/hot/_redo.c``) and the pgoutput tuple parser of the PostgreSQL capture (``_pgoutput.c``). Each one has
a Python twin that loads it and whose ``self_check()`` compares the two on a sample: the module ``<name>`` of the
same package when there is one, else the package itself.

deploy/bootstrap.sh runs this; a failure there only warns, because Ark works without it (the pure-Python path,
fastavro, is the default whenever the module is absent). One gcc call with the interpreter's own flags: no
setuptools, no network, about a second.

    python -m ops.build_hot [--check]   # --check: build, then prove each module matches its Python twin
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "common", "producers", "consumers", "failover", "filesync", "ops", "deploy")


def sources() -> list[Path]:
    """The C modules: found, not listed (ops/ names no engine; see tests/unit/test_architecture.py)."""
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("_*.c"))


def twin(source: Path) -> str:
    """The dotted name of the Python module that loads ``source``'s module and checks it."""
    package = ".".join(source.parent.relative_to(ROOT).parts)
    own = source.with_name(source.stem.lstrip("_") + ".py")
    return f"{package}.{own.stem}" if own.exists() else package


def target(source: Path) -> Path:
    """Where a module goes: next to its source, named with this interpreter's extension suffix."""
    return source.with_name(f"{source.stem}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}")


def build_one(source: Path) -> Path:
    """Compile one module; raise CalledProcessError (its output on stderr) when the compiler refuses."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1] or ["cc"]
    out = target(source)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [*cc, "-O2", "-fPIC", "-shared", "-Wall", "-Werror=implicit-function-declaration",
           f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.replace(out)  # atomic: a running agent never loads a half-written file
    return out


def build() -> list[Path]:
    """Compile every module (all or nothing: a failure removes those built before it)."""
    built: list[Path] = []
    try:
        for source in sources():
            built.append(build_one(source))
    except (OSError, subprocess.CalledProcessError):
        for out in built:
            out.unlink(missing_ok=True)
        raise
    return built


def self_checks() -> str:
    """What is wrong with the built modules ("" when each agrees with its Python twin)."""
    # Imported only now, to load the new modules; by name, as the engine registry loads engine packages.
    problems = [importlib.import_module(twin(source)).self_check() for source in sources()]
    return "; ".join(p for p in problems if p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="after building, check each module against its Python twin on a sample")
    ap.add_argument("--self-check-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.self_check_only:  # the child of --check below
        problem = self_checks()
        print(problem, file=sys.stderr)
        return 1 if problem else 0
    try:
        outs = build()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: the compiled hot path did not build ({exc}); Ark uses its pure-Python code", file=sys.stderr)
        return 1
    if args.check:
        # In a child process: a module that crashes the interpreter must not stay installed either.
        child = subprocess.run([sys.executable, "-m", "ops.build_hot", "--self-check-only"], cwd=ROOT,
                               env={**os.environ, "ARK_HOT": "1"}, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            for out in outs:
                out.unlink(missing_ok=True)
            why = child.stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
            print(f"error: the compiled hot path is wrong here ({why[0]}); removed, Ark uses its pure-Python "
                  "code", file=sys.stderr)
            return 1
    print(" ".join(str(out.relative_to(ROOT)) for out in outs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

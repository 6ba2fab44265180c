"""Build Ark's compiled hot path in place: ``python -m ops.build_hot``.

Every ``_<name>.c`` in Ark's packages is an optional C module, built next to its source: today the redo codec
(``schemas/hot/_redo.c``) and the pgoutput tuple parser of the PostgreSQL capture (``_pgoutput.c``). Each one has
a Python twin that loads it and whose ``self_check()`` compares the two on a sample: the module ``<name>`` of the
same package when there is one, else the package itself.

deploy/bootstrap.sh runs this; a failure there only warns, because Ark works without it (the pure-Python path,
fastavro, is the default whenever the module is absent). One gcc call with the interpreter's own flags: no
setuptools, no network, about a second.

    python -m ops.build_hot [--check]   # --check: build, then prove each module matches its Python twin
    python -m ops.build_hot --asan [--scale N]   # the hot-path tests under AddressSanitizer + UBSan (developers)

``--asan`` builds the modules with ``-fsanitize=address,undefined``, runs their tests (the fuzz loop of
tests/unit/test_hot_fuzz.py, N times its CI size) in a child with the sanitizer runtime preloaded and Python's
allocator switched to malloc (so that ASan sees every object's bounds), then builds the normal modules again,
whatever the outcome: a sanitized module must never stay installed, it aborts any interpreter without the runtime.
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


#: Compiler flags of a sanitized build (--asan): every finding aborts the run, with the C line in the report.
SANITIZE_FLAGS = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined")
#: The tests --asan runs: the fuzz loop and the byte-identity tables of both modules.
ASAN_TESTS = ("tests/unit/test_hot_fuzz.py", "tests/unit/test_hot_codec.py", "tests/unit/test_pgoutput_compiled.py",
              "tests/unit/test_pgoutput.py")


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1] or ["cc"]


def build_one(source: Path, flags: tuple[str, ...] = ("-O2",)) -> Path:
    """Compile one module; raise CalledProcessError (its output on stderr) when the compiler refuses."""
    out = target(source)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [*compiler(), *flags, "-fPIC", "-shared", "-Wall", "-Werror=implicit-function-declaration",
           f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.replace(out)  # atomic: a running agent never loads a half-written file
    return out


def build(flags: tuple[str, ...] = ("-O2",)) -> list[Path]:
    """Compile every module (all or nothing: a failure removes those built before it)."""
    built: list[Path] = []
    try:
        for source in sources():
            built.append(build_one(source, flags))
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


def asan_runtime() -> str:
    """The path of the compiler's AddressSanitizer runtime, to preload into an interpreter built without it."""
    found = subprocess.run([*compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True,
                           check=True).stdout.strip()
    if not os.path.isabs(found):  # the compiler echoes the bare name when it has no such library
        raise FileNotFoundError(f"{compiler()[0]} has no libasan.so (install libasan, or use gcc)")
    return found


def run_sanitized(scale: int) -> int:
    """Build the sanitized modules, run the hot-path tests against them, rebuild the normal ones; the tests' status."""
    try:
        runtime = asan_runtime()
        build(SANITIZE_FLAGS)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: the sanitized hot path did not build ({exc})", file=sys.stderr)
        build()
        return 1
    env = {**os.environ, "ARK_HOT": "1", "LD_PRELOAD": runtime, "PYTHONMALLOC": "malloc",
           # Python itself leaks by design at exit; a refcount leak is what test_hot_fuzz's memory checks catch.
           "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1", "ARK_FUZZ_SCALE": str(scale)}
    print(f"sanitized modules built; running {' '.join(ASAN_TESTS)} (fuzz scale {scale})", flush=True)
    try:
        # -s: a sanitizer report is written to stderr just before the process exits; pytest's capture would eat it.
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *ASAN_TESTS],
                              cwd=ROOT, env=env, check=False).returncode
    finally:
        build()
        print("normal modules rebuilt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="after building, check each module against its Python twin on a sample")
    ap.add_argument("--asan", action="store_true",
                    help="run the hot-path tests and fuzz loop against modules built with AddressSanitizer + UBSan, "
                         "then rebuild the normal modules (for developers; exit status 0 when clean)")
    ap.add_argument("--scale", type=int, default=10, metavar="N",
                    help="with --asan: N times the fuzz cases the unit tests run (default 10)")
    ap.add_argument("--self-check-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.asan:
        return run_sanitized(max(1, args.scale))
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

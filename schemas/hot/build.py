"""Build the compiled redo codec (``schemas/hot/_redo*.so``) in place: ``python -m schemas.hot.build``.

deploy/bootstrap.sh runs this; a failure there only warns, because Ark works without it (the pure-Python path,
fastavro, is the default whenever the module is absent). One gcc call with the interpreter's own flags: no
setuptools, no network, about a second.

    python -m schemas.hot.build [--check]   # --check: build, then prove it loads and matches fastavro on one entry
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "_redo.c"


def target() -> Path:
    """Where the module goes: next to its source, named with this interpreter's extension suffix."""
    return HERE / f"_redo{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def build() -> Path:
    """Compile; raise CalledProcessError (its output on stderr) when the compiler refuses."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1] or ["cc"]
    out = target()
    tmp = out.with_suffix(".tmp")
    cmd = [*cc, "-O2", "-fPIC", "-shared", "-Wall", "-Werror=implicit-function-declaration",
           f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.replace(out)  # atomic: a running agent never loads a half-written file
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="after building, check it against fastavro on one entry")
    args = ap.parse_args(argv)
    try:
        out = build()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: the compiled redo codec did not build ({exc}); Ark uses its pure-Python codec", file=sys.stderr)
        return 1
    if args.check:
        from schemas import hot  # noqa: PLC0415 - imported only after the build, to load the new module

        problem = hot.self_check()
        if problem:
            out.unlink(missing_ok=True)
            print(f"error: the compiled redo codec is wrong here ({problem}); removed, Ark uses its pure-Python "
                  "codec", file=sys.stderr)
            return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

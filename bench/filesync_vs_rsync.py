"""filesync vs rsync, in one run, on identical file pairs.

Each case edits the source of two identical (source, target) pairs the same way, then measures
``rsync -a --no-whole-file --stats`` on one pair and one filesync pass (sender and a local receiver,
both already running, as in ``ark files watch``) on the other. The sparse cases give rsync ``-S``
(``--sparse``) and also report what each target allocates (``st_blocks``) against the source.

Bytes: rsync's "Total bytes sent" + "Total bytes received" (file list, signatures, deltas);
filesync's Kafka record bytes in both directions (changes + acknowledgements, value + headers).
Wall time: rsync's process run; filesync from the start of the pass to the last target's PassAck.

Usage: python bench/filesync_vs_rsync.py [--size-mib 256] [--sparse-mib 1024] [--only big|small|sparse]
                                        [--workdir DIR] [--bootstrap HOST:PORT]
Without --bootstrap (or ARK_TEST_KAFKA) a local broker is started for the run.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import parse_config  # noqa: E402
from filesync.sender import Sender  # noqa: E402
from filesync.service import LocalReceivers, state_dir  # noqa: E402


def rsync(src: Path, dst: Path, *extra: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    out = subprocess.run(["rsync", "-a", "--no-whole-file", *extra, "--stats", f"{src}/", f"{dst}/"],
                         check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    recv = int(re.search(r"Total bytes received: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    return sent + recv, wall


class Ours:
    def __init__(self, bootstrap: str, work: Path, name: str) -> None:
        self.cfg = parse_config({
            "group": "bench", "control_key": {"env": "ARK_CONTROL_KEY"},
"kafka": {"bootstrap": bootstrap}, "primary": {"name": "p", "engine": "postgresql"},
            "files": {name: {"source": str(work / "ours-src"),
                             "targets": [{"name": "t", "path": str(work / "ours-dst")}],
                             "state_dir": str(work / "state"), "horizon_s": 0}}})
        self.name = name
        fs = self.cfg.files[name]
        self.sender = Sender(self.cfg, name, fs, state_dir(self.cfg, name))
        self.local = LocalReceivers(self.cfg, name).__enter__()

    def sync(self) -> tuple[int, float]:
        recv = self.local.receivers[0]
        before = self.sender.channel.bytes_out + recv.channel.bytes_out
        t0 = time.perf_counter()
        report = self.sender.run_pass()
        missing = self.sender.wait(report.pass_id, 600, self.local.check)
        wall = time.perf_counter() - t0
        assert not missing and not self.sender.nacks, (missing, self.sender.nacks)
        return self.sender.channel.bytes_out + recv.channel.bytes_out - before, wall

    def close(self) -> None:
        self.local.__exit__(None, None, None)
        self.sender.close()


def same(a: Path, b: Path) -> None:
    subprocess.run(["diff", "-r", "-q", str(a), str(b)], check=True)


def edit_big(path: Path, case: str, rng: random.Random) -> None:
    size = path.stat().st_size
    if case == "1-byte overwrite":
        with open(path, "r+b") as fh:
            fh.seek(size // 2 + 12345)
            fh.write(b"\x5a")
    elif case == "insert at start":
        tmp = path.with_suffix(".new")
        with open(tmp, "wb") as out, open(path, "rb") as src:
            out.write(b"inserted at the start\n" * 3)
            shutil.copyfileobj(src, out, 16 << 20)
        os.replace(tmp, path)
    elif case == "append":
        with open(path, "ab") as fh:
            fh.write(rng.randbytes(1 << 20))
    elif case == "1% changed at random":
        pages = size // 4096
        with open(path, "r+b") as fh:
            for page in rng.sample(range(pages), pages // 100):
                fh.seek(page * 4096)
                fh.write(rng.randbytes(4096))


SPARSE_EXTENTS = 64
SPARSE_EXTENT = 64 << 10


def edit_sparse(path: Path, case: str, size: int, rng: random.Random) -> None:
    """The sparse cases: a new file (64 extents of 64 KiB in a large hole), 1 MiB written into a hole,
    one 64 KiB extent punched back to a hole."""
    from filesync.sparse import punch_hole

    if case.startswith("new"):
        with open(path, "wb") as fh:
            fh.truncate(size)
            for i in range(SPARSE_EXTENTS):
                os.pwrite(fh.fileno(), rng.randbytes(SPARSE_EXTENT), i * (size // SPARSE_EXTENTS))
    elif case.startswith("1 MiB"):
        with open(path, "r+b") as fh:
            os.pwrite(fh.fileno(), rng.randbytes(1 << 20), size // SPARSE_EXTENTS // 2)
    else:
        with open(path, "r+b") as fh:
            punch_hole(fh.fileno(), 3 * (size // SPARSE_EXTENTS), SPARSE_EXTENT)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--small-files", type=int, default=1000)
    ap.add_argument("--sparse-mib", type=int, default=1024)
    ap.add_argument("--only", choices=["big", "small", "sparse"], default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--bootstrap", default=os.environ.get("ARK_TEST_KAFKA"))
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fsbench-"))
    broker = None
    if not args.bootstrap:
        from deploy.kafka import KafkaBroker
        from deploy.ports import free_port

        broker = KafkaBroker(work / "kafka", free_port(), free_port())
        broker.start(timeout=180)
        args.bootstrap = broker.bootstrap
    rng = random.Random(42)
    rows: list[tuple[str, int, int, float, float]] = []
    allocation: list[tuple[str, int, int, int]] = []
    sparse_size = args.sparse_mib << 20
    try:
        for name, builder in (("big", "big"), ("small", "small"), ("sparse", "sparse")):
            if args.only and name != args.only:
                continue
            case_dir = work / name
            shutil.rmtree(case_dir, ignore_errors=True)
            for d in ("rsync-src", "rsync-dst", "ours-src", "ours-dst"):
                (case_dir / d).mkdir(parents=True)
            if builder == "big":
                with open(case_dir / "rsync-src" / "big.bin", "wb") as fh:
                    for _ in range(args.size_mib):
                        fh.write(rng.randbytes(1 << 20))
                cases = ["1-byte overwrite", "insert at start", "append", "1% changed at random"]
            elif builder == "sparse":
                (case_dir / "rsync-src" / "README").write_text("a sparse file arrives next\n")
                cases = [f"new {args.sparse_mib} MiB sparse file, {SPARSE_EXTENTS * SPARSE_EXTENT >> 20} MiB data",
                         "1 MiB written into a hole", "64 KiB extent punched to a hole"]
            else:
                for i in range(args.small_files):
                    sub = case_dir / "rsync-src" / f"d{i % 20:02d}"
                    sub.mkdir(exist_ok=True)
                    (sub / f"f{i:04d}.dat").write_bytes(rng.randbytes(rng.randint(1024, 16384)))
                cases = [f"{args.small_files} small files, 10 changed"]
            subprocess.run(["cp", "-a", "--sparse=always", f"{case_dir}/rsync-src/.", f"{case_dir}/ours-src/"],
                           check=True)
            flags = ("-S",) if builder == "sparse" else ()
            rsync(case_dir / "rsync-src", case_dir / "rsync-dst", *flags)
            ours = Ours(args.bootstrap, case_dir, f"bench{name}{int(time.time())}")
            try:
                print(f"[{name}] initial filesync: {ours.sync()[1]:.2f} s", flush=True)
                for case in cases:
                    time.sleep(1.1)  # rsync's quick check compares whole-second mtimes
                    for side in ("rsync-src", "ours-src"):
                        r = random.Random(hash(case) & 0xFFFF)
                        if builder == "big":
                            edit_big(case_dir / side / "big.bin", case, r)
                        elif builder == "sparse":
                            edit_sparse(case_dir / side / "sparse.bin", case, sparse_size, r)
                        else:
                            files = sorted((case_dir / side).rglob("*.dat"))
                            for f in r.sample(files, 10):
                                with open(f, "r+b") as fh:
                                    fh.seek(100)
                                    fh.write(b"changed!")
                    subprocess.run(["sync"], check=True)
                    rb, rt = rsync(case_dir / "rsync-src", case_dir / "rsync-dst", *flags)
                    ob, ot = ours.sync()
                    same(case_dir / "ours-src", case_dir / "ours-dst")
                    same(case_dir / "rsync-src", case_dir / "rsync-dst")
                    rows.append((case, rb, ob, rt, ot))
                    print(f"  {case}: rsync {rb} B {rt:.3f} s | filesync {ob} B {ot:.3f} s", flush=True)
                    if builder == "sparse":
                        src_alloc = allocated(case_dir / "ours-src" / "sparse.bin")
                        allocation.append((case, src_alloc, allocated(case_dir / "rsync-dst" / "sparse.bin"),
                                           allocated(case_dir / "ours-dst" / "sparse.bin")))
            finally:
                ours.close()
            shutil.rmtree(case_dir, ignore_errors=True)
    finally:
        if broker is not None:
            broker.stop()
    print()
    print(f"| edit ({args.size_mib} MiB file unless said) | rsync bytes | filesync bytes | bytes ratio "
          "| rsync s | filesync s | time ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case, rb, ob, rt, ot in rows:
        print(f"| {case} | {rb:,} | {ob:,} | {ob / rb:.3g} | {rt:.3f} | {ot:.3f} | {ot / rt:.2f} |")
    if allocation:
        print()
        print("| sparse case | source allocates | rsync -S target | filesync target |")
        print("|---|---:|---:|---:|")
        for case, src_alloc, r_alloc, o_alloc in allocation:
            print(f"| {case} | {src_alloc:,} | {r_alloc:,} | {o_alloc:,} |")


if __name__ == "__main__":
    main()

"""Small process helpers over /proc (Linux): liveness that treats zombies as dead, children, signals."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = [
    "alive", "children", "kill_quietly", "proc_state", "read_pid", "signal_tree", "tail", "wait_dead",
    "wait_stopped",
]


def proc_state(pid: int) -> str | None:
    """Return the one-letter state of ``pid`` from /proc (R, S, T, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def alive(pid: int | None) -> bool:
    """True when ``pid`` exists and is not a zombie. Reaps it when it is a child of this process."""
    if not pid or pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Return the direct children of ``pid`` (by scanning /proc/*/stat)."""
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split(" ")
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


def signal_tree(pid: int, sig: int, include_children: bool = True) -> None:
    """Send ``sig`` to ``pid`` and (optionally) to its direct children; vanished processes are ignored."""
    targets = [pid, *(children(pid) if include_children else [])]
    # SIGCONT the parent first, SIGSTOP it first too: either way the parent does not react to children.
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)


def wait_dead(pids: list[int], timeout: float, reaped: bool = False) -> bool:
    """Wait until none of ``pids`` is alive; return False on timeout.

    With ``reaped`` also wait until their zombies are gone from /proc: a program that checks a pid
    file with kill(pid, 0) (the postmaster does) still sees an unreaped zombie as running.
    """

    def done() -> bool:
        if reaped:
            return all(not alive(p) and proc_state(p) is None for p in pids)
        return not any(alive(p) for p in pids)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return done()


def wait_stopped(pid: int, stopped: bool, timeout: float = 5) -> bool:
    """Wait until ``pid`` is (``stopped=True``) or is no longer (False) stopped by a signal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = proc_state(pid)
        if state is None or (state == "T") == stopped:
            return True
        time.sleep(0.01)
    return False


def read_pid(path: Path) -> int | None:
    """Read a pid from the first line of ``path``; None when missing or unparsable."""
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a text file ('' when it is missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``pid``, ignoring a process that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)

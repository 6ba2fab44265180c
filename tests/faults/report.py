"""Render the fault suite's result rows (JSON files written by tests/support/faults.py) as a Markdown table.

    python tests/faults/report.py [RESULTS_DIR]      # default: $ARK_FAULT_RESULTS

Exit status 1 when a row is not clean (any lost, duplicated or partial-visible, unequal tables, or a
case that did not finish), so a script can rely on it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

HEADER = ("| fault | case | runs | lost | duplicated | partial-visible | observations | tables equal at end |\n"
          "|---|---|---:|---:|---:|---:|---:|---|")


def _order(row: dict[str, object]) -> tuple[int, str]:
    match = re.match(r"F(\d+)", str(row.get("fault", "")))
    return (int(match.group(1)) if match else 999, str(row.get("title", "")))


def load(directory: Path) -> list[dict[str, object]]:
    """Every result row in ``directory``, in fault order."""
    rows = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    return sorted(rows, key=_order)


def clean(row: dict[str, object]) -> bool:
    """True when the row shows no finding."""
    return not (row.get("lost") or row.get("duplicated") or row.get("partial_visible")
                or row.get("unequal_tables") or row.get("error")) and int(str(row.get("runs", 0))) > 0


def render(rows: list[dict[str, object]]) -> str:
    """The Markdown table (and one line per unclean row saying why)."""
    lines = [HEADER]
    for r in rows:
        equal = "no: " + ", ".join(map(str, r["unequal_tables"])) if r.get("unequal_tables") else "yes"  # type: ignore[call-overload]
        if r.get("tables_compared") is False:
            equal = "not compared: capture refused, standby stays a prefix"
        if r.get("error"):
            equal = f"did not finish: {r['error']}"
        lines.append(f"| {r['fault']} | {r['title']} | {r['runs']} | {r['lost']} | {r['duplicated']} | "
                     f"{r['partial_visible']} | {r['samples']} | {equal} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the table of ``argv[0]`` (or ``$ARK_FAULT_RESULTS``); 1 when a row is not clean or none exist."""
    where = argv[0] if argv else os.environ.get("ARK_FAULT_RESULTS", "")
    if not where:
        print("usage: report.py RESULTS_DIR (or set ARK_FAULT_RESULTS)", file=sys.stderr)
        return 2
    rows = load(Path(where))
    if not rows:
        print(f"no fault results in {where}", file=sys.stderr)
        return 1
    print(render(rows))
    return 0 if all(clean(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

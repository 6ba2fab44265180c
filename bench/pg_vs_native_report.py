"""The report of bench/pg_vs_native.py (the figures it prints at the end), and the two formatting helpers every
PostgreSQL bench script shares: the nearest-rank percentile and a seconds figure that may be a timeout."""

from __future__ import annotations

import argparse
from typing import Any


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def fmt_s(value: float) -> str:
    return "timeout" if value == float("inf") else f"{value:.2f}"


def _kafka_line(lags: list[float], pad: str = "") -> None:
    """Ark's lag before the apply: source commit → readable in the redo topic (every message of the phase)."""
    top = max(lags, default=float("nan"))
    print(f"{'ark kafka':10}{pad} {pct(lags, 50):10.3f} {pct(lags, 99):10.3f} {top:10.3f} {len(lags):7d} messages "
          "(commit -> readable in Kafka, before the apply)")


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    a = results["a"]
    print()
    if "q" in results:
        q = results["q"]["lags"]
        print(f"== (q) quiet primary: one probe row every {results['q']['every']} s for {args.quiet_seconds} s "
              f"(standbys polled every {args.probe_poll} s)")
        print(f"{'':10} {'lag p50 s':>10} {'lag p99 s':>10} {'lag max s':>10} {'probes':>7}")
        for name in ("native", "ark"):
            top = max(q[name], default=float("nan"))
            print(f"{name:10} {pct(q[name], 50):10.3f} {pct(q[name], 99):10.3f} {top:10.3f} {len(q[name]):7d}")
        _kafka_line(results["q"]["kafka"])
        print()
    print(f"== (a) pgbench tpcb-like, scale {args.scale}, {args.clients} clients, -T {args.seconds}: "
          f"{a['committed']:,} committed in {a['wall']:.1f} s on the primary ({a['tps_line']})")
    print(f"{'':10} {'catch-up s':>11} {'sustain tps':>12} {'lag p50 s':>10} {'lag p99 s':>10} {'lag max s':>10}")
    sustain: dict[str, float] = {}
    for name in ("native", "ark"):
        lags = a["lags"][name]
        sustain[name] = a["committed"] / (a["wall"] + a["catchup"][name])
        print(f"{name:10} {fmt_s(a['catchup'][name]):>11} {sustain[name]:12.1f} {pct(lags, 50):10.3f} "
              f"{pct(lags, 99):10.3f} {max(lags, default=float('nan')):10.3f}")
    _kafka_line(a["kafka"], pad=" " * 25)
    ratio_a = sustain["ark"] / sustain["native"]
    p99 = pct(a["lags"]["ark"], 99)
    print(f"ratio Ark/native sustainable tps: {ratio_a:.3f}  (target >= 1.0 with Ark p99 lag <= 1 s: "
          f"{'met' if ratio_a >= 1.0 and p99 <= 1.0 else 'NOT met'})  probes: {len(a['lags']['ark'])}")
    p50 = pct(a["lags"]["ark"], 50)
    print(f"Ark lag under pgbench: p50 {p50:.3f} s (target <= 0.05: {'met' if p50 <= 0.05 else 'NOT met'}), "
          f"p99 {p99:.3f} s (target <= 0.2: {'met' if p99 <= 0.2 else 'NOT met'})")
    print()
    if "b" not in results:
        print("== processes: CPU seconds and peak RSS in (a) (pgbench + catch-up)")
        for label in sorted(a["procs"]):
            cpu, rss = a["procs"][label]
            print(f"{label:16} {cpu:8.1f} s {rss / 2**20:10.1f} MiB")
        return
    b = results["b"]
    print(f"== (b) one UPDATE of {args.rows:,} rows (primary: {b['update_s']:.1f} s to execute and commit)")
    for name in ("native", "ark"):
        print(f"{name:10} applied {fmt_s(b['applied'][name]):>8} s after commit; rows updated on standby "
              f"{b['counts'][name]:,}")
    ratio_b = b["applied"]["ark"] / b["applied"]["native"]
    print(f"ratio Ark/native: {ratio_b:.3f}  (target <= 1.0: {'met' if ratio_b <= 1.0 else 'NOT met'})")
    print()
    print("== processes: CPU seconds and peak RSS per phase (a: pgbench + catch-up, b: update until applied)")
    print(f"{'':16} {'a cpu s':>8} {'a RSS MiB':>10} {'b cpu s':>8} {'b RSS MiB':>10}")
    for label in sorted(set(a["procs"]) | set(b["procs"])):
        ca, ra = a["procs"].get(label, (0.0, 0))
        cb, rb = b["procs"].get(label, (0.0, 0))
        print(f"{label:16} {ca:8.1f} {ra / 2**20:10.1f} {cb:8.1f} {rb / 2**20:10.1f}")

"""``ark report``'s HTML (one self-contained file: inline SVG charts, no script, no network) and its
terminal text. People would rather look than read: the charts come first, the tables after."""

from __future__ import annotations

import html
import io
from typing import Any

from rich.console import Console
from rich.table import Table

_PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"]
_W, _H, _PAD_L, _PAD_B, _PAD_T = 860, 240, 64, 42, 16


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"


def _axis(top: float, labels: list[str]) -> str:
    """Y grid with 4 steps up to ``top`` and up to 12 x labels."""
    out = []
    plot_h = _H - _PAD_B - _PAD_T
    for i in range(5):
        y = _PAD_T + plot_h - plot_h * i / 4
        out.append(f'<line x1="{_PAD_L}" y1="{y:.1f}" x2="{_W - 8}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                   f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                   f'{_esc(_num(top * i / 4, 1 if top < 10 else 0))}</text>')
    n = len(labels)
    step = max(1, -(-n // 12))
    plot_w = _W - _PAD_L - 8
    for i in range(0, n, step):
        x = _PAD_L + plot_w * (i + 0.5) / n
        out.append(f'<text x="{x:.1f}" y="{_H - _PAD_B + 16}" text-anchor="middle" font-size="11">'
                   f'{_esc(labels[i][5:16].replace("T", " "))}</text>')
    return "".join(out)


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    """Stacked bars, one per label (hour)."""
    if not labels:
        return f"<h3>{_esc(title)}</h3><p class=muted>no data in the window</p>"
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    top = max(totals) or 1.0
    plot_w, plot_h = _W - _PAD_L - 8, _H - _PAD_B - _PAD_T
    bw = plot_w / len(labels)
    parts = [_axis(top, labels)]
    for i in range(len(labels)):
        y = float(_PAD_T + plot_h)
        for j, (_name, values) in enumerate(series.items()):
            h = plot_h * values[i] / top
            y -= h
            parts.append(f'<rect x="{_PAD_L + i * bw + bw * 0.1:.1f}" y="{y:.1f}" width="{bw * 0.8:.1f}" '
                         f'height="{h:.1f}" fill="{_PALETTE[j % len(_PALETTE)]}"/>')
    return _figure(title, parts, list(series))


def line_chart(title: str, labels: list[str], series: dict[str, list[float | None]], unit: str = "") -> str:
    """One line per series over the labels (hours); gaps where a value is None."""
    known = [v for s in series.values() for v in s if v is not None]
    if not labels or not known:
        return f"<h3>{_esc(title)}</h3><p class=muted>no data in the window</p>"
    top = max(known) or 1.0
    plot_w, plot_h = _W - _PAD_L - 8, _H - _PAD_B - _PAD_T
    parts = [_axis(top, labels)]
    for j, (_name, values) in enumerate(series.items()):
        color = _PALETTE[j % len(_PALETTE)]
        points = [(_PAD_L + plot_w * (i + 0.5) / len(labels), _PAD_T + plot_h - plot_h * v / top)
                  for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
    return _figure(title + (f" ({unit})" if unit else ""), parts, list(series))


def _figure(title: str, parts: list[str], names: list[str]) -> str:
    legend = "".join(f'<span class=key><i style="background:{_PALETTE[j % len(_PALETTE)]}"></i>{_esc(n)}</span>'
                     for j, n in enumerate(names))
    return (f"<h3>{_esc(title)}</h3><div class=legend>{legend}</div>"
            f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" aria-label="{_esc(title)}">'
            + "".join(parts) + "</svg>")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px 40px; color: #111827; }
h1 { margin-bottom: 0; } h2 { margin-top: 32px; border-bottom: 1px solid #e5e7eb; } h3 { margin: 18px 0 4px; }
.muted { color: #6b7280; } .cards { display: flex; gap: 16px; flex-wrap: wrap; margin: 16px 0; }
.card { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 16px; min-width: 140px; }
.card b { display: block; font-size: 22px; } .legend { font-size: 12px; } .key { margin-right: 14px; }
.key i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; } .warn { color: #b45309; }
svg text { fill: #374151; font-family: inherit; }
"""


def render_html(doc: dict[str, Any]) -> str:
    """The report as one HTML page."""
    t, a, ev = doc["totals"], doc["archive"], doc["events"]
    hours = [h["hour"] for h in doc["hours"]]
    tables = sorted(doc["tables"], key=lambda r: -r["rows"])
    top = [r["table"] for r in tables[:6]]
    rows_by: dict[str, list[float]] = {name: [0.0] * len(hours) for name in top}
    if len(tables) > 6:
        rows_by["other tables"] = [0.0] * len(hours)
    index = {h: i for i, h in enumerate(hours)}
    for r in doc["hourly_tables"]:
        rows_by[r["table"] if r["table"] in top else "other tables"][index[r["hour"]]] += r["rows"]
    sb_hours = sorted(set(hours) | {h["hour"] for sb in doc["standbys"] for h in sb["hours"]})
    sb_index = {h: i for i, h in enumerate(sb_hours)}

    def per_standby(key: str) -> dict[str, list[float | None]]:
        out: dict[str, list[float | None]] = {}
        for sb in doc["standbys"]:
            values: list[float | None] = [None] * len(sb_hours)
            for h in sb["hours"]:
                values[sb_index[h["hour"]]] = h[key]
            out[sb["name"]] = values
        return out

    p99 = {f"{k} p99": v for k, v in per_standby("lag_p99_s").items()}
    p50 = {f"{k} p50": v for k, v in per_standby("lag_p50_s").items()}
    cards = [("transactions", _num(t["transactions"])), ("rows", _num(t["rows"])),
             ("bytes on Kafka", _bytes(t["bytes"])), ("tables", _num(t["tables"])),
             ("quarantines", _num(ev["quarantines"])),
             ("table resyncs", _num(ev["resyncs_started"])),
             ("archive span", f"{a['span_hours']:.1f} h" if a.get("span_hours") is not None else "–")]
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Ark report · {_esc(doc['group'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Replication report · group {_esc(doc['group'])}</h1>",
        f"<p class=muted>{_esc(doc['since'])} → {_esc(doc['until'])} (UTC) · generated {_esc(doc['generated_at'])}</p>",
        "<div class=cards>" + "".join(f"<div class=card><b>{_esc(v)}</b>{_esc(k)}</div>" for k, v in cards) + "</div>",
        *(f"<p class=warn>{_esc(n)}</p>" for n in doc["notes"]),
        "<h2>Activity</h2>",
        bar_chart("Transactions per hour", hours, {"transactions": [float(h["transactions"]) for h in doc["hours"]]}),
        bar_chart("Rows per hour, by table", hours, rows_by),
        "<h2>Standbys</h2>",
        line_chart("Lag per hour, p50 and p99", sb_hours, {**p50, **p99}, "seconds"),
        line_chart("Apply rate per hour", sb_hours, per_standby("apply_rows_per_s"), "rows/s"),
        _table(["standby", "lag p50 s", "lag p99 s", "lag max s", "seconds in error"],
               [[sb["name"], _num(sb["lag_p50_s"], 2), _num(sb["lag_p99_s"], 2), _num(sb["lag_max_s"], 2),
                 _num(sb["error_s"])] for sb in doc["standbys"]]),
        "<h3>Per hour</h3>",
        _table(["standby", "hour", "lag p50", "p95", "p99", "max", "rows/s", "max rows/s", "delay s", "error s"],
               [[sb["name"], h["hour"], _num(h["lag_p50_s"], 2), _num(h["lag_p95_s"], 2), _num(h["lag_p99_s"], 2),
                 _num(h["lag_max_s"], 2), _num(h["apply_rows_per_s"], 1), _num(h["apply_rows_per_s_max"], 1),
                 _num(h["delay_s"]), _num(h["error_s"])] for sb in doc["standbys"] for h in sb["hours"]]),
        "<h2>Tables</h2>",
        _table(["table", "transactions", "rows", "inserts", "updates", "deletes", "bytes"],
               [[r["table"], _num(r["transactions"]), _num(r["rows"]), _num(r["inserts"]), _num(r["updates"]),
                 _num(r["deletes"]), _bytes(r["bytes"])] for r in tables]),
        "<h2>Integrity and operations</h2>",
        _table(["event", "count"], [[k.replace("_", " "), v] for k, v in ev.items()]
               + [[f"control records refused ({k})", v] for k, v in doc["control_refused"].items()]
               + [["republished transactions (retransmissions)", t["republished_transactions"]]]),
        _table(["node", "server log", "lines"], [[r["node"], r["severity"], r["lines"]] for r in doc["server_log"]])
        if doc["server_log"] else "<p class=muted>no ERROR, FATAL or PANIC line in the database server logs</p>",
        "<h3>Operators' intents</h3>",
        _table(["at", "by", "target", "intent"], [[i["at"], i["by"], i["target"], i["intent"]] for i in doc["intents"]])
        if doc["intents"] else "<p class=muted>none in the window</p>",
        "<h2>Archive (redo topic)</h2>",
        _table(["topic", "offsets", "oldest commit", "newest commit", "span", "size"],
               [[a["topic"], f"{a.get('low_offset', '–')} – {a.get('high_offset', '–')}", a.get("oldest_commit") or "–",
                 a.get("newest_commit") or "–",
                 f"{a['span_hours']:.1f} h" if a.get("span_hours") is not None else "–",
                 _bytes(a.get("bytes")) + (" (estimated)" if a.get("bytes_estimated") else "")]]),
        "</body></html>",
    ]
    return "\n".join(parts)


def render_text(doc: dict[str, Any]) -> str:
    """The report for a terminal: totals, tables, standbys, events, archive."""
    console = Console(record=True, width=110, file=io.StringIO())
    t, a = doc["totals"], doc["archive"]
    console.print(f"report of group {doc['group']}, {doc['since']} → {doc['until']} (UTC): {t['transactions']:,} "
                  f"transactions, {t['rows']:,} rows, {_bytes(t['bytes'])} on Kafka, {t['tables']} tables")
    for note in doc["notes"]:
        console.print(f"note: {note}")
    tables = Table("table", "transactions", "rows", "inserts", "updates", "deletes", "bytes", title="tables")
    for r in sorted(doc["tables"], key=lambda r: -r["rows"]):
        tables.add_row(r["table"], _num(r["transactions"]), _num(r["rows"]), _num(r["inserts"]), _num(r["updates"]),
                       _num(r["deletes"]), _bytes(r["bytes"]))
    console.print(tables)
    sbs = Table("standby", "lag p50 s", "lag p99 s", "lag max s", "seconds in error", title="standbys")
    for sb in doc["standbys"]:
        sbs.add_row(sb["name"], _num(sb["lag_p50_s"], 2), _num(sb["lag_p99_s"], 2), _num(sb["lag_max_s"], 2),
                    _num(sb["error_s"]))
    console.print(sbs)
    console.print("events: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in doc["events"].items()))
    console.print(f"archive {a['topic']}: offsets {a.get('low_offset', '-')}–{a.get('high_offset', '-')}, "
                  f"{a.get('oldest_commit') or '-'} → {a.get('newest_commit') or '-'}, "
                  f"{_bytes(a.get('bytes'))}{' (estimated)' if a.get('bytes_estimated') else ''}")
    return console.export_text()

"""``ark console``: the group at a glance, in a terminal (Textual; works over SSH in 80×24 and grows).

Three tabs: **Group** (topology, one row per standby with lag and rate sparklines, the capture),
**Agents** (every agent's heartbeat, health, host and database facts, processes, server-log alerts),
**Events** (quarantines, retransmissions, resyncs, gaps, operators' intents, handovers and epochs, agents'
state changes, alerts). Actions apply to the standby selected on the Group tab; each asks for confirmation
and is then written as a signed intent (ops/console/source.py: the CLI's own functions). The switchover
first shows its decision (ops/console/switchover.py); failover is deliberately not offered (see HELP).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from common.errors import ArkError
from ops.console.dialogs import DIALOG_CSS, AskScreen, ConfirmScreen, HelpScreen
from ops.console.model import AgentRow, ConsoleView, Event, StandbyRow, sparkline, topology_lines
from ops.console.switchover import SwitchoverAction
from schemas.topics import control_topic

_SEVERITY_STYLE = {"error": "bold red", "warn": "yellow", "info": ""}
_OK_STATES = ("running", "delayed", "paused", "held for verify", "retransmitting")


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def fmt_num(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _state_text(state: str) -> Text:
    style = "green" if state in _OK_STATES else "bold red" if state.startswith(("stopped", "error", "down")) \
        else "yellow"
    return Text(state, style=style)


class ArkConsole(App[None]):
    """The console app; ``source`` gives views and carries out actions (ops/console/source.py)."""

    TITLE = "Ark console"
    CSS = DIALOG_CSS + """
    #banner { height: auto; max-height: 4; color: $warning; padding: 0 1; display: none; }
    #banner.shown { display: block; }
    #topology { height: auto; padding: 0 1; }
    #handover { height: auto; padding: 0 1; border-left: thick $warning; display: none; }
    #handover.shown { display: block; }
    #standbys { height: auto; max-height: 14; }
    #capture { height: auto; padding: 0 1; }
    #standby-detail { height: auto; padding: 0 1; color: $text-muted; }
    #agents-table { height: auto; max-height: 12; }
    #agent-detail { height: auto; padding: 0 1; }
    #events-table { height: 1fr; }
    """
    BINDINGS = [
        Binding("1", "show_tab('group')", "Group", show=False),
        Binding("2", "show_tab('agents')", "Agents", show=False),
        Binding("3", "show_tab('events')", "Events", show=False),
        Binding("d", "delay", "Delay"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("t", "resync", "Resync"),
        Binding("v", "verify", "Verify"),
        Binding("s", "switchover", "Switchover"),
        Binding("f5", "refresh", "Refresh", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, source: Any, *, refresh_s: float = 2.0) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.view: ConsoleView | None = None
        #: What the console itself did (actions written, verify verdicts), shown in the feed.
        self.own_events: list[Event] = []
        #: The last action's outcome (one sentence), for people and tests.
        self.last_action = ""
        self._loading = False
        self._cursors: dict[str, int] = {}
        self.switchover = SwitchoverAction(self)

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="banner")
        with TabbedContent(initial="group"):
            with TabPane("Group [1]", id="group"), VerticalScroll():
                yield Static(id="topology")
                yield Static(id="handover")
                yield DataTable(id="standbys", cursor_type="row", zebra_stripes=True)
                yield Static(id="standby-detail")
                yield Static(id="capture")
            with TabPane("Agents [2]", id="agents"), VerticalScroll():
                yield DataTable(id="agents-table", cursor_type="row", zebra_stripes=True)
                yield Static(id="agent-detail")
            with TabPane("Events [3]", id="events"):
                yield DataTable(id="events-table", cursor_type="row")
        # compact, and no palette key (ctrl+p still opens it): every action and the help fit in 80 columns
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = "loading..."
        self.query_one("#standbys", DataTable).focus()
        self.action_refresh()
        if self.refresh_s > 0:
            self.set_interval(self.refresh_s, self.action_refresh)

    def on_resize(self) -> None:
        if self.view is not None:
            view = self.view
            self.call_after_refresh(self.show_view, view)  # once the new size is in force

    # -- data ----------------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        if not self._loading:
            self._loading = True
            self._load()

    @work(thread=True, group="refresh")
    def _load(self) -> None:
        try:
            view = self.source.snapshot()
        except Exception as exc:  # noqa: BLE001 - loop boundary: the console keeps running and says why
            self.call_from_thread(self._load_failed, exc)
            return
        self.call_from_thread(self.show_view, view)

    def _load_failed(self, exc: Exception) -> None:
        self._loading = False
        text = exc.message if isinstance(exc, ArkError) else f"{type(exc).__name__}: {exc}"
        banner = self.query_one("#banner", Static)
        banner.update(escape(f"cannot refresh: {text}"))
        banner.add_class("shown")

    def show_view(self, view: ConsoleView) -> None:
        """Put a view on the screens (keeps the selected rows)."""
        self._loading = False
        if not self.is_running or not self.query("#standbys"):
            return  # the app is closing
        self.view = view
        self.sub_title = f"group {view.group} · redo end {view.redo_end} · " + time.strftime(
            "%H:%M:%S", time.localtime(view.at))
        banner = self.query_one("#banner", Static)
        lines = [f"cannot see: {b}" for b in view.blind] + [f"warning: {w}" for w in view.warnings]
        banner.update(escape("\n".join(lines)))
        banner.set_class(bool(lines), "shown")
        self._show_group(view)
        self._show_agents(view)
        self._show_events(view)

    def _wide(self) -> bool:
        return self.size.width >= 120

    def _spark_width(self) -> int:
        return max(8, min(60, self.size.width - (100 if self._wide() else 66)))

    def _show_group(self, view: ConsoleView) -> None:
        cap = view.capture
        topo = "\n".join(escape(line) for line in topology_lines(view))
        for fs in view.file_sets:
            members = ", ".join(f"{escape(n)} {escape(r)} {escape(st)}" for n, r, st in fs["agents"])
            members = members or "no agent running"
            topo += f"\nfiles [b]{escape(fs['name'])}[/b]: {members}"
        self.query_one("#topology", Static).update(topo)
        table = self.query_one("#standbys", DataTable)
        width = self._spark_width()
        cols = ["standby", "state", "delay s", "lag s", "entries", "rows/s", "lag (10 min)"]
        if self._wide():
            cols += ["applied position", "last commit"]
        self._reset(table, cols)
        for sb in view.standbys:
            cells: list[Any] = [sb.name, _state_text(sb.state), f"{sb.delay_s:g}", fmt_num(sb.lag_s),
                                "-" if sb.lag_entries is None else str(sb.lag_entries), fmt_num(sb.rate, 0),
                                Text(sparkline(sb.lag_series, width), style="cyan")]
            if self._wide():
                cells += [sb.applied_position or "-", sb.applied_commit_time or "-"]
            table.add_row(*cells, key=sb.name)
        self._restore(table)
        self._show_standby_detail()
        stalled = f"\n[yellow]{escape(cap['stalled'])}[/]" if cap.get("stalled") else ""
        held = fmt_bytes(cap.get("retained_bytes"))
        rate = cap.get("rate")
        self.query_one("#capture", Static).update(
            f"[b]capture[/b] on {escape(cap.get('node', '?'))}: {escape(cap.get('state', '?'))} · position "
            f"{escape(cap.get('source_position') or '-')} · redo offset {cap.get('produced_offset', -1)} · "
            f"{fmt_num(rate, 0)} rows/s [cyan]{sparkline(cap.get('rate_series') or [], min(width, 20))}[/] · "
            f"log held {held}{stalled}")

    def _show_standby_detail(self) -> None:
        sb = self._selected_row()
        detail = self.query_one("#standby-detail", Static)
        if sb is None:
            detail.update("no standby configured" if self.view and not self.view.standbys else "")
            return
        rate = Text(sparkline(sb.rate_series, self._spark_width()), style="green")
        text = Text(f"{sb.name}: applied {sb.applied_position or '-'} (offset {sb.applied_offset}) · rows/s ")
        text.append(rate)
        if sb.message:
            text.append(f"\n{sb.message}", style="yellow")
        detail.update(text)

    def _show_agents(self, view: ConsoleView) -> None:
        table = self.query_one("#agents-table", DataTable)
        cols = ["agent", "name", "state", "beat s", "cpu%", "mem%", "load", "disk%", "db sess", "locks", "log err"]
        if self._wide():
            cols[2:2] = ["host", "pid", "role", "epoch"]
        self._reset(table, cols)
        for a in view.agents:
            m = a.metrics
            disks = [v for k, v in m.items() if k.startswith("disk.used_pct@")]
            cells: list[Any] = [a.agent, a.name, _state_text(a.state), f"{a.age_s:.0f}",
                                fmt_num(m.get("host.cpu_pct"), 0), fmt_num(m.get("host.mem_used_pct"), 0),
                                fmt_num(m.get("host.load1"), 2),
                                fmt_num(max(disks) if disks else None, 0), fmt_num(m.get("db.sessions"), 0),
                                fmt_num(m.get("db.lock_waits"), 0),
                                fmt_num((m.get("log.error", 0) + m.get("log.fatal", 0) + m.get("log.panic", 0))
                                        if "log.error" in m else None, 0)]
            if self._wide():
                cells[2:2] = [a.host, str(a.pid), a.role, str(a.epoch)]
            table.add_row(*cells, key=f"{a.agent}/{a.name}")
        self._restore(table)
        self._show_agent_detail()

    def _show_agent_detail(self) -> None:
        table = self.query_one("#agents-table", DataTable)
        detail = self.query_one("#agent-detail", Static)
        agents = self.view.agents if self.view else []
        if not agents:
            detail.update("no agent has sent a heartbeat in the last 10 minutes")
            return
        a: AgentRow = agents[min(table.cursor_row, len(agents) - 1)]
        m = a.metrics
        lines = [f"[b]{escape(a.agent)} {escape(a.name)}[/b] on {escape(a.host or '?')} pid {a.pid}, role "
                 f"{escape(a.role)}, epoch {a.epoch}: {escape(a.state)}"
                 + ("" if a.db_healthy else " · [red]database not answering[/]")]
        if a.message:
            lines.append(f"[yellow]{escape(a.message)}[/]")
        host = [f"cpu {fmt_num(m.get('host.cpu_pct'), 0)}%", f"mem {fmt_num(m.get('host.mem_used_pct'), 0)}%",
                f"load {fmt_num(m.get('host.load1'), 2)}/{fmt_num(m.get('host.load5'), 2)}/"
                f"{fmt_num(m.get('host.load15'), 2)}"]
        host += [f"{k.split('@', 1)[1]} {v:.0f}% used" for k, v in sorted(m.items()) if k.startswith("disk.used_pct@")]
        lines.append("host: " + " · ".join(host))
        if "db.up" in m:
            lines.append(f"database: {'up' if m['db.up'] else '[red]down[/]'} · sessions "
                         f"{fmt_num(m.get('db.sessions'), 0)}/{fmt_num(m.get('db.max_connections'), 0)} · "
                         f"long txns {fmt_num(m.get('db.long_txns'), 0)} (oldest {fmt_num(m.get('db.oldest_txn_s'), 0)}"
                         f" s) · lock waits {fmt_num(m.get('db.lock_waits'), 0)} · slot holds "
                         f"{fmt_bytes(m.get('db.slot_retained_bytes'))}")
        if "log.error" in m:
            lines.append(f"server log: {m.get('log.panic', 0):.0f} PANIC · {m.get('log.fatal', 0):.0f} FATAL · "
                         f"{m.get('log.error', 0):.0f} ERROR since the agent started")
        for p in a.processes:
            lines.append(f"process {escape(p['name'])} pid {p['pid']}: "
                         + (f"running, cpu {p['cpu_pct']:.0f}%, rss {fmt_bytes(p['rss_bytes'])}, "
                            f"{p['children']} children, up {p['uptime_s'] / 3600:.1f} h" if p["running"]
                            else "[red]not running[/]"))
        for alert in a.alerts[-5:]:
            style = "red" if alert["severity"] in ("PANIC", "FATAL") else "yellow"
            lines.append(f"[{style}]{escape(alert['text'])}[/]")
        detail.update("\n".join(lines))

    def _show_events(self, view: ConsoleView) -> None:
        table = self.query_one("#events-table", DataTable)
        self._reset(table, ["time", "sev", "kind", "what"])
        events = sorted([*view.events, *self.own_events], key=lambda e: e.at, reverse=True)
        for i, ev in enumerate(events):
            table.add_row(time.strftime("%m-%d %H:%M:%S", time.localtime(ev.at)),
                          Text(ev.severity, style=_SEVERITY_STYLE.get(ev.severity, "")), ev.kind, ev.text, key=str(i))
        if not events:
            table.add_row("", "", "", "no events yet", key="none")

    def _reset(self, table: DataTable[Any], cols: list[str]) -> None:
        self._cursors[table.id or ""] = table.cursor_row
        if [str(c.label) for c in table.columns.values()] != cols:
            table.clear(columns=True)
            table.add_columns(*cols)
        else:
            table.clear()

    def _restore(self, table: DataTable[Any]) -> None:
        row = self._cursors.get(table.id or "", 0)
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        try:
            if event.data_table.id == "standbys":
                self._show_standby_detail()
            elif event.data_table.id == "agents-table":
                self._show_agent_detail()
        except NoMatches:
            pass  # a highlight delivered while the app closes

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus_tab(tab)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id or "")

    def _focus_tab(self, tab: str) -> None:
        """The arrow keys move in the shown tab's table."""
        table = {"group": "#standbys", "agents": "#agents-table", "events": "#events-table"}.get(tab)
        if table:
            self.query_one(table, DataTable).focus()

    # -- actions -------------------------------------------------------------------------------------
    def _selected_row(self) -> StandbyRow | None:
        if self.view is None or not self.view.standbys:
            return None
        row = self.query_one("#standbys", DataTable).cursor_row
        return self.view.standbys[min(max(row, 0), len(self.view.standbys) - 1)]

    def selected_standby(self) -> str | None:
        """The standby selected on the Group tab (None, said, when there is none)."""
        return self._selected()

    def _selected(self) -> str | None:
        sb = self._selected_row()
        if sb is None:
            self.notify("no standby selected (the Group tab lists them)", severity="warning")
            return None
        return sb.name

    def _confirm_then(self, question: str, detail: str, what: str, act: Any) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._write(what, act)
            else:
                self.last_action = f"{what}: cancelled, nothing written"
                self.notify(self.last_action)

        self.push_screen(ConfirmScreen(question, detail), answered)

    @work(thread=True, group="action")
    def _write(self, what: str, act: Any) -> None:
        """Carry out a confirmed action: ``act()`` returns (sentence, ok)."""
        try:
            sentence, ok = act()
        except ArkError as exc:
            self.call_from_thread(self._after, f"{what}: not done: {exc.message}" + (
                f" (fix: {exc.fix})" if exc.fix else ""), "error")
            return
        self.call_from_thread(self._after, sentence, "info" if ok else "error")

    @staticmethod
    def _intent(what: str, write: Any) -> Any:
        """An action that writes one intent: its sentence names the request id."""
        return lambda: (f"{what}: intent written (request {write()[:8]})", True)

    def _after(self, sentence: str, severity: str) -> None:
        self.say_outcome(sentence, severity)

    def say_outcome(self, sentence: str, severity: str, *, refresh: bool = True) -> None:
        """An action's outcome: the last action, a notification, a line of the feed; then refresh."""
        self.last_action = sentence
        self.own_events.append(Event(time.time(), "error" if severity == "error" else "info", "console", sentence))
        self.notify(sentence, severity="error" if severity == "error" else "information", timeout=15)
        if self.view is not None:
            self._show_events(self.view)
        if refresh:
            self.action_refresh()

    def _topic(self) -> str:
        return control_topic(self.view.group) if self.view else "the control topic"

    def _confirm_intent(self, question: str, detail: str, what: str, write: Any) -> None:
        """Confirm, then write one intent (``write()`` returns its request id)."""
        self._confirm_then(question, detail, what, self._intent(what, write))

    def action_delay(self) -> None:
        name = self._selected()
        if name is None:
            return

        def check(text: str) -> str | None:
            try:
                return None if float(text) >= 0 else "a delay cannot be negative (0 is real time)"
            except ValueError:
                return "give seconds, e.g. 0, 30, 3600"

        def asked(text: str | None) -> None:
            if text is None:
                return
            seconds = float(text)
            self._confirm_intent(
                f"Set the apply delay of {name} to {seconds:g} s?",
                f"Writes a signed 'set-delay' intent for {name} on {self._topic()}; the applier picks it up within a "
                "second (a shorter delay applies what is due at once; a longer one holds new entries in Kafka).",
                f"delay of {name} to {seconds:g} s", lambda: self.source.actions.set_delay(name, seconds))

        current = self._selected_row()
        self.push_screen(AskScreen(f"New apply delay of {name}, in seconds", "seconds",
                                   check, f"{current.delay_s:g}" if current else ""), asked)

    def action_pause(self) -> None:
        name = self._selected()
        if name is not None:
            self._confirm_intent(
                f"Pause apply on {name}?",
                f"Writes a signed 'pause' intent for {name} on {self._topic()}. The applier stops at its next "
                "transaction boundary; entries wait in Kafka until you resume (r).",
                f"pause of {name}", lambda: self.source.actions.pause(name))

    def action_resume(self) -> None:
        name = self._selected()
        if name is not None:
            self._confirm_intent(
                f"Resume apply on {name}?",
                f"Writes a signed 'resume' intent for {name} on {self._topic()}; the applier goes on from its state "
                "row.", f"resume of {name}", lambda: self.source.actions.resume(name))

    def action_resync(self) -> None:
        name = self._selected()
        if name is None:
            return

        def asked(table: str | None) -> None:
            if not table:
                return
            full = table if "." in table else f"public.{table}"
            self._confirm_intent(
                f"Resync table {full} on {name}?",
                f"Writes a signed 'resync-table' intent for {name} on {self._topic()}. Its applier copies the table "
                "from a fresh primary snapshot while the other tables keep applying; the table's rows wait meanwhile. "
                "Progress shows in the Events tab.", f"resync of {full} on {name}",
                lambda: self.source.actions.resync_table(name, full))

        self.push_screen(AskScreen(f"Which table of {name}? (schema.table)", "public.history",
                                   lambda t: None if t else "name a table"), asked)

    def action_verify(self) -> None:
        name = self._selected()
        if name is not None:
            self._confirm_then(
                f"Verify {name} against the primary?",
                f"Runs 'ark verify {name}': writes a signed 'verify-hold' intent on {self._topic()}; the applier stops "
                "for well under a second at a position a primary snapshot also sees, then both sides are compared in "
                "SQL while apply goes on. Nothing is written to the standby.",
                f"verify of {name}", lambda: self._run_verify(name))

    def _run_verify(self, name: str) -> tuple[str, bool]:
        self.call_from_thread(self.notify, f"verify of {name} running (the Events tab shows its verdict)")
        doc, code = self.source.actions.verify(name)
        tables = doc.get("tables", [])
        different = [t["table"] for t in tables if t["verdict"] != "equal"]
        sentence = (f"verify of {name}: {doc['verdict']} at {doc.get('position', '?')} ({len(tables)} tables"
                    + (f"; differs or not compared: {', '.join(different)}; 'ark verify {name}' shows the keys"
                       if different else "") + f", exit {code})")
        return sentence, code == 0

    def action_switchover(self) -> None:
        self.switchover.start()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if not self.switchover.blocks_quit():
            self.exit()

    def on_unmount(self) -> None:
        self.source.close()


def console_log_file(group: str) -> Path:
    """Where the console's own log goes while it runs (a full-screen UI has no room for log lines)."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ark"
    return base / f"console-{group}.log"


def run_console(cfg: Any, refresh_s: float = 2.0) -> None:
    """``ark console``: its log lines (and librdkafka's) go to :func:`console_log_file`, not the terminal."""
    from ops.console.source import GroupSource

    path = console_log_file(cfg.group)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s ark-console[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        ArkConsole(GroupSource(cfg), refresh_s=refresh_s).run()
    finally:
        root.handlers[:] = saved

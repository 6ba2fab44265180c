"""``ark check --promotable STANDBY``: would a promotion of this standby lack anything? Exit 0 only when not.

The engine's :class:`~common.promotable.PromotableCheck` compares the primary (inside a fresh snapshot)
and the standby object by object; :func:`unprotected_tables` adds the tables the stream does not fully
protect. Every line names what is missing and how to fix it. Rows and sequence values move while the
primary writes: run it when the standby has caught up (a switchover runs it with the primary read-only).
"""

from __future__ import annotations

import contextlib

from rich.markup import escape

from common.config import ArkConfig
from common.errors import ArkError
from common.promotable import Lack
from ops.context import console
from ops.engines import capture_factory, promotable_check, snapshot_source
from ops.errors import NotPromotable


def unprotected_tables(cfg: ArkConfig) -> list[Lack]:
    """Tables of ``primary.tables`` whose changes the standby does not fully receive (UNLOGGED; no usable key
    under the keyless policy ``insert-only`` or ``skip``; not published yet): a promotion would have them
    incomplete. The capture's own protection report (what ``ark check`` and ``ark status`` list), less what is
    not about one table (a primary without the DDL hook is a warning of ``ark check``, not a missing object)."""
    with contextlib.closing(capture_factory(cfg)()) as capture:
        found = capture.protection()
    return [Lack(" ".join(p.what.split()[:2]), p.what, p.fix) for p in found if p.what.startswith("table ")]


def promotable_lacks(cfg: ArkConfig, standby_name: str) -> list[Lack]:
    """What a promotion of ``standby_name`` would lack (empty: it may be promoted)."""
    standby = cfg.standby(standby_name)
    check = promotable_check(standby.engine)
    if check is None or standby.engine != cfg.primary.engine:
        raise ArkError(f"standby {standby.name} ({standby.engine}) cannot be compared object by object with the "
                       f"primary ({cfg.primary.engine})", fix=f"compare the rows instead: ark verify {standby.name}")
    with snapshot_source(cfg.primary).open() as snap:
        tables = snap.tables(cfg.primary.tables)
        lacks = check.lacks(cfg.primary, snap, standby, tables)
    return lacks + unprotected_tables(cfg)


def run_promotable(cfg: ArkConfig, standby_name: str) -> None:
    """Print what a promotion would lack; raise NotPromotable (exit 32) when anything does."""
    lacks = promotable_lacks(cfg, standby_name)
    if not lacks:
        console.print(f"[green]✓[/] {standby_name} has every object of the primary's replicated tables, sequences at "
                      "or ahead of the primary's and the same row counts: nothing a promotion would lack")
        return
    console.print(f"what a promotion of {standby_name} would lack:")
    for lack in lacks:  # one line per lack and one per fix (greppable, never wrapped)
        console.print(f"[red]✗[/] {escape(lack.subject)}: {escape(lack.what)}", soft_wrap=True)
        console.print(f"    [bold]fix:[/] {escape(lack.fix)}", soft_wrap=True)
    first = lacks[0]
    raise NotPromotable(f"{len(lacks)} thing(s) a promotion of {standby_name} would lack; first: {first.subject}: "
                        f"{first.what}", fix=first.fix)

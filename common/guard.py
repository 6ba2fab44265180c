"""Never harm a primary: the refusals checked before anything writes to a standby (pure decisions).

A standby entry in the config is only an address. Before ``ark sync``, ``ark resync``, ``ark apply`` or
``ark verify --repair`` writes a byte (a schema, a setting, a state row, a table), the database behind that
address is identified (:class:`~common.identity.DatabaseIdentity`) and checked:

============================ ====== ==================================================================
refusal                      exit   when
============================ ====== ==================================================================
:class:`SameDatabase`        18     it is the group's primary, was recorded as the group's primary, or is
                                    the same database as another standby of the group
:class:`IsASource`           19     it holds a replication slot or publication (a capture reads it),
                                    unless the standby declares ``chain: true``
:class:`IdentityChanged`     28     it is not the database that was synced behind that address (restored
                                    or replaced): apply stops and asks for ``ark sync``
:class:`NotEmpty`            29     ``ark sync`` would replace rows Ark did not put there (no ``--overwrite``)
============================ ====== ==================================================================

The same server with another database (a standby in another database of the primary's cluster) is
allowed. What the refusals are computed from is gathered by the callers (ops/guard.py for the CLI,
consumers/runner.py for the applier); everything here is pure and unit-tested with tables of cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from common.control import ControlRecord
from common.errors import ArkError
from common.exit_codes import ExitCode
from common.identity import DatabaseIdentity
from schemas.control import EpochBegun, NodeIdentity, StandbyFrom


class GuardRefusal(ArkError):
    """Root of the refusals: nothing was written."""


class SameDatabase(GuardRefusal):
    """The standby is the primary's database, or another standby's."""

    exit_code = ExitCode.SAME_DATABASE


class IsASource(GuardRefusal):
    """The standby is itself read by a capture (it holds a slot or a publication)."""

    exit_code = ExitCode.IS_A_SOURCE


class IdentityChanged(GuardRefusal):
    """The database behind the standby's address is not the one that was synced."""

    exit_code = ExitCode.IDENTITY_CHANGED


class NotEmpty(GuardRefusal):
    """An initial sync would replace data that Ark did not put there."""

    exit_code = ExitCode.NOT_EMPTY


@dataclass(frozen=True)
class TargetFacts:
    """What a standby database says about itself, read without writing anything."""

    identity: DatabaseIdentity
    #: Ark state rows found in the database: (group, standby) → the identity recorded in them ("" if none).
    state_rows: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Replication slots and publications in this database (a capture may read it), for messages.
    sources: Sequence[str] = ()


@dataclass(frozen=True)
class Recorded:
    """Identities recorded on the group's control topic (``node-identity`` records)."""

    #: node name → (role, identity) as last recorded.
    nodes: Mapping[str, tuple[str, DatabaseIdentity]] = field(default_factory=dict)
    #: Every identity ever recorded as this group's primary.
    primaries: frozenset[DatabaseIdentity] = frozenset()


@dataclass(frozen=True)
class Situation:
    """Everything a decision looks at, for one standby and one action."""

    group: str
    standby: str
    #: sync, resync, apply, repair or check
    action: str
    facts: TargetFacts
    recorded: Recorded = field(default_factory=Recorded)
    #: The primary's identity as it answers now (None when unreachable: the recorded one is used).
    primary: DatabaseIdentity | None = None
    primary_name: str = "the primary"
    #: The other standbys' identities as they answer now (the unreachable ones are left out).
    others: Mapping[str, DatabaseIdentity] = field(default_factory=dict)
    chain: bool = False
    overwrite: bool = False
    #: For ``sync``: tables the copy would write that already hold rows, with their row counts.
    occupied: Mapping[str, int] = field(default_factory=dict)
    config_path: str = "the config"


def refusals(s: Situation) -> list[GuardRefusal]:
    """What forbids the action on this standby (empty: go ahead). See the module docstring."""
    live = s.facts.identity
    out: list[GuardRefusal] = []
    where = f"standby {s.standby} ({live})"
    fix_address = (f"correct standbys[{s.standby}] (host, port, dbname) in {s.config_path}: it must name a database "
                   "of its own; nothing was written")
    primary = s.primary or next((ident for node, (role, ident) in s.recorded.nodes.items()
                                 if role == "primary" and node == s.primary_name), None)
    if primary is not None and live == primary:
        out.append(SameDatabase(f"{where} is the primary's own database: {s.action} would write into the "
                                "database it replicates", fix=fix_address))
    elif live in s.recorded.primaries:
        out.append(SameDatabase(f"{where} was recorded as this group's primary: an applier never writes to it",
                                fix=fix_address))
    twins = sorted({name for name, ident in s.others.items() if ident == live and name != s.standby}
                   | {node for node, (role, ident) in s.recorded.nodes.items()
                      if role == "standby" and ident == live and node != s.standby})
    if twins:
        out.append(SameDatabase(f"{where} is the same database as standby {', '.join(twins)}: two standbys of one "
                                "group would write over each other", fix=fix_address))
    if s.facts.sources and not s.chain:
        out.append(IsASource(f"{where} is read by a capture: it holds {', '.join(s.facts.sources)}; writing to it "
                             "would feed those changes into another replication stream",
                             fix=f"if standby {s.standby} is meant to be the source of another group, set "
                                 f"standbys[{s.standby}].chain: true; if the slot or publication is stale, drop it "
                                 "on that database (for a slot: SELECT pg_drop_replication_slot('NAME'))"))
    mine = s.facts.state_rows.get((s.group, s.standby))
    if s.action in ("apply", "repair", "check"):
        recorded = s.recorded.nodes.get(s.standby)
        was = [ident for ident in ((recorded[1] if recorded and recorded[0] == "standby" else None),
                                   DatabaseIdentity.parse(mine or "")) if ident is not None]
        changed = next((ident for ident in was if ident != live), None)
        if changed is not None:
            out.append(IdentityChanged(f"{where} is not the database that was synced behind that address "
                                       f"(synced: {changed}): it was restored or replaced",
                                       fix=f"stop 'ark apply {s.standby}' and run 'ark sync {s.standby}' to copy the "
                                           "primary into it again"))
    if s.action == "sync" and not s.overwrite:
        ours = mine is not None and DatabaseIdentity.parse(mine or "") in (None, live)
        if s.occupied and not ours:
            tables = ", ".join(f"{t} ({n:,} rows)" if n <= 1_000_000 else f"{t} (over 1,000,000 rows)"
                               for t, n in sorted(s.occupied.items()))
            others = sorted(f"{g}/{sb}" for g, sb in s.facts.state_rows if (g, sb) != (s.group, s.standby))
            owner = f" (Ark state of {', '.join(others)} is there)" if others else ""
            out.append(NotEmpty(f"{where} already holds data that Ark did not put there for group {s.group}"
                                f"{owner}: {tables}; an initial sync would replace it",
                                fix=f"check that standbys[{s.standby}] names the right database; if its data may "
                                    f"be replaced, run 'ark sync {s.standby} --overwrite'"))
    return out


def first_refusal(s: Situation) -> None:
    """Raise the first refusal, if any (the callers print one error; ``ark check`` lists them all)."""
    found = refusals(s)
    if found:
        raise found[0]


def recorded_identities(records: Iterable[ControlRecord]) -> Recorded:
    """The identities recorded on the control topic (the last record per node wins; every primary counts).

    Roles move with epochs (common/roles.py): an ``epoch-begun`` record makes its node's identity a primary's,
    and a ``standby-from`` record (the old primary after a switchover, a reinstated one: what it committed is
    all in Kafka or in the divergence ledger) makes a former primary's identity a standby's again. Nothing else
    lets an applier write to a database that was the group's primary."""
    nodes: dict[str, tuple[str, DatabaseIdentity]] = {}
    primaries: set[DatabaseIdentity] = set()
    for rec in records:
        body = rec.body
        if isinstance(body, EpochBegun | StandbyFrom):
            node = body.primary if isinstance(body, EpochBegun) else rec.target
            known = nodes.get(node)
            if known is not None:
                role = "primary" if isinstance(body, EpochBegun) else "standby"
                nodes[node] = (role, known[1])
                (primaries.add if role == "primary" else primaries.discard)(known[1])
            continue
        if not isinstance(body, NodeIdentity):
            continue
        ident = DatabaseIdentity.parse(body.identity, body.label)
        if ident is None:
            continue
        nodes[rec.target] = (body.role, ident)
        if body.role == "primary":
            primaries.add(ident)
    return Recorded(nodes, frozenset(primaries))


def source_refusal(group: str, primary_name: str, live: DatabaseIdentity, recorded: Recorded,
                   config_path: str = "the config") -> GuardRefusal | None:
    """Why the capture must not set up on this database: it is recorded as a standby of the group (its
    slot and publication would stream the applier's own writes back into the group)."""
    twins = sorted(node for node, (role, ident) in recorded.nodes.items() if role == "standby" and ident == live)
    if not twins:
        return None
    return SameDatabase(f"the primary {primary_name} ({live}) is the database of standby {', '.join(twins)}: a "
                        "capture there would publish the applier's own writes back into the group",
                        fix=f"correct primary (host, port, dbname) in {config_path}; nothing was created on it")

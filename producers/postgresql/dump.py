"""The schema copy of a PostgreSQL primary: ``pg_dump --schema-only`` of the replicated schemas, filtered.

Why pg_dump: it is PostgreSQL's own, complete and correct account of every object and of the order
they must be created in (types before the tables that use them, a sequence before the default that
calls it, partitions attached after their tables, index partitions attached to their parents).
Rebuilding that from the catalog would be a second, worse pg_dump.

How:

1. ``pg_dump --format=custom --schema-only --snapshot=<token>`` of the schemas the replicated tables
   need (:func:`common.engines.postgresql_objects.replicated_objects`), with the snapshot the rows are
   copied from, so the objects match the rows exactly. Owners, tablespaces and security labels are
   left out: the objects belong to the standby's Ark user (which must write them), and tablespaces are
   the standby cluster's own. Privileges (GRANT) are kept; one that names a role the standby cluster
   lacks is left out there, with a warning (consumers/postgresql/objects.py).
2. ``pg_restore --section=pre-data`` and ``--section=post-data`` turn it into SQL, split where pg_dump
   splits it: what must exist before the rows are loaded, and what is built after them (keys,
   indexes, foreign keys, triggers), so the copy stays fast. ``--verbose`` makes every entry carry
   its catalog identity (class and OID) and its dependencies (:func:`parse`).
3. Tables of those schemas that are not replicated are excluded from the dump (pg_dump neither locks
   nor describes them). Whatever still names one is dropped, with what depends on it (:func:`choose`);
   an entry that links a replicated table to one that is not (a foreign key to it) is reported as left
   out.

The password never appears on a command line: the child gets it in its environment (``PGPASSWORD``,
readable by its own user only), with every other ``PG*`` variable removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from common.engines.postgresql import PostgresPrimary
from common.engines.postgresql_objects import replicated_objects, sequence_values, split_name
from common.errors import SourceError
from common.snapshot import ObjectDef, SchemaObjects
from schemas.entries import SequenceValue

log = logging.getLogger(__name__)

#: Catalog OIDs of the system catalogs an entry's class names (fixed in every PostgreSQL release).
PG_CLASS, PG_CONSTRAINT, PG_ATTRDEF, PG_TRIGGER, PG_REWRITE, PG_POLICY, PG_STATISTIC_EXT = (
    1259, 2606, 2604, 2620, 2618, 3256, 3381)
#: Entry kinds named after the relation they attach (their class is 0).
_ATTACH = ("TABLE ATTACH", "INDEX ATTACH")
#: How long pg_dump waits for its share locks (an ALTER TABLE holding a table) before giving up.
LOCK_WAIT = "60s"

_TOC = re.compile(r"^-- TOC entry (\d+) \(class (\d+) OID (\d+)\)$")
_NAME = re.compile(r"^-- Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$")
#: Lines pg_restore writes between entries (session settings, its restrict key, its closing comments).
_BETWEEN = re.compile(r"^(SET [a-z_]+ = .*;|SELECT pg_catalog\.set_config\(.*\);|\\(un)?restrict \S+|--.*)?$")


@dataclass(frozen=True, slots=True)
class DumpEntry:
    """One entry of pg_restore's verbose SQL output."""

    toc: int
    classid: int
    oid: int
    deps: tuple[int, ...]
    kind: str
    name: str
    schema: str
    sql: str

    @property
    def label(self) -> str:
        """``KIND schema.name`` for messages."""
        where = f"{self.schema}." if self.schema and self.schema != "-" else ""
        return f"{self.kind} {where}{self.name}"


def parse(text: str) -> list[DumpEntry]:
    """The entries of ``pg_restore --verbose -f -`` output, in order, each with its SQL (settings stripped)."""
    lines = text.split("\n")
    entries: list[DumpEntry] = []
    i = 0
    n = len(lines)
    while i < n:
        match = _TOC.match(lines[i]) if i > 0 and lines[i - 1] == "--" else None
        if match is None:
            i += 1
            continue
        toc, classid, oid = (int(g) for g in match.groups())
        deps: tuple[int, ...] = ()
        kind = name = schema = ""
        i += 1
        while i < n and lines[i] != "--":
            line = lines[i]
            if line.startswith("-- Dependencies:"):
                deps = tuple(int(d) for d in line.split(":", 1)[1].split())
            elif (m := _NAME.match(line)) is not None:
                name, kind, schema = m.group(1), m.group(2), m.group(3)
            i += 1
        i += 1
        start = i
        while i < n and not (lines[i] == "--" and i + 1 < n and _TOC.match(lines[i + 1])):
            i += 1
        body = lines[start:i]
        while body and _BETWEEN.match(body[-1]):
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        entries.append(DumpEntry(toc, classid, oid, deps, kind, name, schema, "\n".join(body)))
    return entries


def choose(entries: Sequence[DumpEntry], owners: Mapping[tuple[int, int], tuple[int, ...]],
           attached: Mapping[str, tuple[int, ...]], kept: Mapping[int, str]
           ) -> tuple[list[tuple[int, ObjectDef]], list[str]]:
    """The entries a standby of the ``kept`` tables (oid -> ``schema.table``) needs, and what was left out.

    ``owners[(class, oid)]`` lists the relations an entry belongs to (its table first: an index's table, a
    foreign key's table then the table it references; empty for a type, a function, a standalone
    sequence); ``attached["schema.name"]`` the same for the relation an ATTACH entry names. An entry is
    kept when every relation it belongs to is kept and every entry it depends on is kept. Returns the kept
    ones as (TOC entry id, definition), in order.
    """
    dropped: set[int] = set()
    table_of: dict[int, str] = {}
    out: list[tuple[int, ObjectDef]] = []
    left_out: list[str] = []
    for e in entries:
        if e.kind in _ATTACH:
            rels = attached.get(f"{e.schema}.{e.name}", ())
        else:
            rels = owners.get((e.classid, e.oid), ()) if e.classid else ()
        inside = [r for r in rels if r in kept]
        table = kept[inside[0]] if inside else next((table_of[d] for d in e.deps if d in table_of), "")
        if len(inside) < len(rels) or any(d in dropped for d in e.deps):
            dropped.add(e.toc)
            if inside or table:
                left_out.append(f"{e.label} (of {table or kept[inside[0]]}): it involves a table that is not "
                                "replicated")
            continue
        if table:
            table_of[e.toc] = table
        name = f"{e.schema}.{e.name}" if e.schema not in ("", "-") else e.name
        out.append((e.toc, ObjectDef(e.kind, name, e.sql, table)))
    return out, left_out


# -- reading the primary -------------------------------------------------------------------------------
_CLASS_OWNERS_SQL = """
SELECT c.oid::int8, CASE
  WHEN c.relkind IN ('r', 'p', 'f') THEN ARRAY[c.oid::int8]
  WHEN c.relkind IN ('i', 'I') THEN ARRAY[(SELECT i.indrelid::int8 FROM pg_index i WHERE i.indexrelid = c.oid)]
  WHEN c.relkind = 'S' THEN ARRAY(SELECT d.refobjid::int8 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                  AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                                  AND d.deptype IN ('a', 'i'))
  ELSE '{}'::int8[] END
FROM pg_class c WHERE c.oid = ANY (%s::oid[])
"""
_OWNER_SQL = {
    PG_CONSTRAINT: "SELECT oid::int8, array_remove(ARRAY[conrelid::int8, confrelid::int8], 0) FROM pg_constraint "
                   "WHERE oid = ANY (%s::oid[])",
    PG_ATTRDEF: "SELECT oid::int8, ARRAY[adrelid::int8] FROM pg_attrdef WHERE oid = ANY (%s::oid[])",
    PG_TRIGGER: "SELECT oid::int8, ARRAY[tgrelid::int8] FROM pg_trigger WHERE oid = ANY (%s::oid[])",
    PG_REWRITE: "SELECT oid::int8, ARRAY[ev_class::int8] FROM pg_rewrite WHERE oid = ANY (%s::oid[])",
    PG_POLICY: "SELECT oid::int8, ARRAY[polrelid::int8] FROM pg_policy WHERE oid = ANY (%s::oid[])",
    PG_STATISTIC_EXT: "SELECT oid::int8, ARRAY[stxrelid::int8] FROM pg_statistic_ext WHERE oid = ANY (%s::oid[])",
    PG_CLASS: _CLASS_OWNERS_SQL,
}
# The tables of the dumped schemas that are not replicated: pg_dump is told to leave them alone (no share lock
# held on them while it runs, nothing of them to filter out afterwards).
_OTHER_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%s::text[]) AND c.relkind IN ('r', 'p', 'f') AND c.oid <> ALL (%s::oid[])
"""
_ATTACHED_SQL = """
SELECT q.name, CASE WHEN c.relkind IN ('i', 'I')
                    THEN ARRAY[(SELECT i.indrelid::int8 FROM pg_index i WHERE i.indexrelid = c.oid)]
                    ELSE ARRAY[c.oid::int8] END
FROM unnest(%s::text[], %s::text[], %s::text[]) AS q(name, nsp, rel)
JOIN pg_namespace n ON n.nspname = q.nsp JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = q.rel
"""


def _owners(conn: psycopg.Connection[Any], entries: Sequence[DumpEntry]
            ) -> tuple[dict[tuple[int, int], tuple[int, ...]], dict[str, tuple[int, ...]]]:
    by_class: dict[int, list[int]] = {}
    for e in entries:
        if e.classid in _OWNER_SQL:
            by_class.setdefault(e.classid, []).append(e.oid)
    owners: dict[tuple[int, int], tuple[int, ...]] = {}
    for classid, oids in by_class.items():
        for oid, rels in conn.execute(_OWNER_SQL[classid], [oids]).fetchall():
            owners[(classid, int(oid))] = tuple(int(r) for r in rels if r is not None)
    names = [(f"{e.schema}.{e.name}", e.schema, e.name) for e in entries if e.kind in _ATTACH]
    attached: dict[str, tuple[int, ...]] = {}
    if names:
        rows = conn.execute(_ATTACHED_SQL, [[a for a, _, _ in names], [b for _, b, _ in names],
                                            [c for _, _, c in names]]).fetchall()
        attached = {str(name): tuple(int(r) for r in rels if r is not None) for name, rels in rows}
    return owners, attached


def tool(name: str, server_version_num: int) -> Path:
    """The ``pg_dump``/``pg_restore`` that can read this server: ``$ARK_PG_BIN``, else Debian's for its major
    version (or a newer one), else the one on PATH."""
    env = os.environ.get("ARK_PG_BIN")
    candidates = [Path(env) / name] if env else []
    major = server_version_num // 10000
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        found = sorted((p for p in root.iterdir() if p.name.isdigit() and int(p.name) >= major),
                       key=lambda p: int(p.name))
        candidates += [p / "bin" / name for p in found]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise SourceError(f"{name} for PostgreSQL {major} not found on this host: the standby's schema is copied with it",
                      fix=f"install the PostgreSQL {major} client (apt-get install postgresql-client-{major}), or set "
                          "ARK_PG_BIN to the directory that holds pg_dump and pg_restore")


def _env(primary: PostgresPrimary) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    password = primary.resolved_password()
    if password is not None:
        env["PGPASSWORD"] = password  # the child's environment, never its command line
    return env


def _conninfo(primary: PostgresPrimary) -> str:
    def q(v: object) -> str:
        return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (f"host={q(primary.host)} port={q(primary.port)} dbname={q(primary.dbname)} user={q(primary.user)} "
            f"connect_timeout={q(primary.connect_timeout_s)} application_name='ark-dump'")


def _schema_pattern(name: str) -> str:
    """``name`` as an exact pg_dump pattern (double quotes make every character literal)."""
    return '"' + name.replace('"', '""') + '"'


def _run(cmd: list[str], env: dict[str, str], what: str, primary: PostgresPrimary) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd="/")
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()] or res.stderr.splitlines() or ["?"]
        raise SourceError(f"{what} of {primary.describe()} failed: {lines[0].strip()}",
                          fix="check the primary (it must allow the capture user to read every object of the "
                              "replicated schemas) and run the command again")
    return res.stdout


def dump_sections(primary: PostgresPrimary, token: str, schemas: Sequence[str], server_version_num: int,
                  exclude: Sequence[str] = ()) -> tuple[str, str]:
    """(pre-data SQL, post-data SQL) of ``schemas`` as of the exported snapshot ``token`` (module docstring).

    ``exclude``: tables (``schema.table``) pg_dump leaves alone: it neither describes nor locks them."""
    env = _env(primary)
    dump, restore = tool("pg_dump", server_version_num), tool("pg_restore", server_version_num)
    with tempfile.TemporaryDirectory(prefix="ark-dump-") as tmp:
        archive = str(Path(tmp) / "schema.dump")
        cmd = [str(dump), "--schema-only", "--format=custom", f"--file={archive}",
               *([f"--snapshot={token}"] if token else []), "--no-owner", "--no-tablespaces",
               "--no-security-labels", "--no-publications", "--no-subscriptions", f"--lock-wait-timeout={LOCK_WAIT}",
               f"--dbname={_conninfo(primary)}"]
        cmd += [f"--schema={_schema_pattern(s)}" for s in schemas]
        cmd += [f"--exclude-table={_schema_pattern(schema)}.{_schema_pattern(name)}" for schema, name in
                (split_name(t) for t in exclude)]
        _run(cmd, env, "pg_dump --schema-only", primary)
        out = []
        for section in ("pre-data", "post-data"):
            out.append(_run([str(restore), "--verbose", "--no-owner", f"--section={section}",
                             "--file=-", archive], env, f"pg_restore --section={section}", primary))
    return out[0], out[1]


def schema_objects(conn: psycopg.Connection[Any], primary: PostgresPrimary, token: str,
                   roots: Sequence[str]) -> SchemaObjects:
    """Every object a standby of the tables ``roots`` needs, as of the snapshot ``conn`` is in (see the module
    docstring); sequence values are read now (at or after the snapshot, so never behind its rows)."""
    def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
        return conn.execute(sql, params).fetchall()

    rep = replicated_objects(query, roots)
    version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert version is not None
    others = [f"{n}.{r}" for n, r in conn.execute(_OTHER_TABLES_SQL, [list(rep.schemas), rep.table_oids]).fetchall()]
    pre, post = dump_sections(primary, token, rep.schemas, int(version[0]), others) if rep.schemas else ("", "")
    before, after = parse(pre), parse(post)
    owners, attached = _owners(conn, before + after)
    kept = dict(rep.tables)
    chosen, left_out = choose(before + after, owners, attached, kept)
    first = {e.toc for e in before}
    pre_defs = tuple(d for toc, d in chosen if toc in first)
    post_defs = tuple(d for toc, d in chosen if toc not in first)
    _read_us, _position, values = sequence_values(query, rep.sequences)
    log.info("schema of %d tables: %d objects before the rows, %d after, %d extensions, %d sequences, %d left out",
             len(rep.tables), len(pre_defs), len(post_defs), len(rep.extensions), len(rep.sequences), len(left_out))
    return SchemaObjects(engine="postgresql", before_rows=pre_defs, after_rows=post_defs, extensions=rep.extensions,
                         sequences=tuple(SequenceValue(n, v) for n, v in values), left_out=tuple(left_out))

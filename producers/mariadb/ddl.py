"""DDL in MariaDB's binlog: which statement touched which table, and how a standby can follow it.

The binlog carries DDL as the statement text (a query event). The *shape* after the DDL is read
exactly from the next table-map event of the table (:mod:`.tablemap`), never from the catalog,
which may already be ahead when capture lags. What the table map cannot say is how the old shape
became the new one: a rename keeps the column's data, a drop and an add do not; and which value
the rows that already existed got for an added column (no row event carries it). That part comes
from the statement itself: :func:`parse` reads the few statement forms Ark follows, and
:class:`Evolution` replays their steps on the column names the capture last saw. At the next table
map the prediction is checked against the names the log states; when they agree the new shape is
published with *transition hints*, otherwise without (a standby then follows only what needs no
hint, and resyncs the table when existing rows would otherwise be wrong).

Transition hints (on the first TableMeta after the DDL; snapshot metas never carry them):

* ``column_id`` = :func:`name_id` of the name the column had before the DDL (a renamed column
  carries its old name's id; an added one its own). Ids are >= 2**30, so they cannot be mistaken
  for PostgreSQL attnums: MariaDB has no stable column numbers, and this says "same column as".
* ``default_expr`` = the added column's DEFAULT clause as written; ``missing_value`` = the value
  the existing rows got, as canonical text (asked of the server, see capture), None for NULL.
  An added column with a DEFAULT but no missing value (``DEFAULT CURRENT_TIMESTAMP``,
  ``DEFAULT (uuid())``) got per-row or per-moment values that are not in the log: the standby
  resyncs that table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from schemas.entries import NAME_ID_BASE, name_column_id

_TOKEN = re.compile(r"""
    (?P<ws>\s+|--[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<bq>`(?:[^`]|``)*`)
  | (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+)
  | (?P<word>[A-Za-z0-9_$\u0080-\uffff]+)
  | (?P<op>.)
""", re.X | re.S)


#: A column's transition id from its name (>= NAME_ID_BASE, so never taken for an attnum).
name_id = name_column_id
__all__ = ["NAME_ID_BASE", "Ddl", "Evolution", "Predicted", "Step", "name_id", "parse", "tokens"]


@dataclass(frozen=True, slots=True)
class Tok:
    """One token: kind (bq, str, num, word, op) and text (identifiers unquoted)."""

    kind: str
    text: str
    raw: str

    def is_word(self, *words: str) -> bool:
        """True for a bare word equal (case-insensitively) to one of ``words``."""
        return self.kind == "word" and self.text.upper() in words


def tokens(sql: str) -> list[Tok]:
    """The tokens of ``sql`` without whitespace and comments (``/*! ... */`` version comments kept open)."""
    sql = re.sub(r"/\*(?!!).*?\*/", " ", sql, flags=re.S)  # plain comments go; /*!...*/ bodies are read
    sql = re.sub(r"/\*!\d*", " ", sql).replace("*/", " ")
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "op"
        raw = m.group()
        if kind == "ws":
            continue
        text = raw[1:-1].replace("``", "`") if kind == "bq" else raw
        out.append(Tok("word" if kind == "bq" else kind, text, raw))
    return out


@dataclass(slots=True)
class Step:
    """One step of an ALTER TABLE on columns (or ``other``: an index or a table option, no column change)."""

    op: str  # add, drop, rename, change, modify, other, unknown
    name: str = ""
    new_name: str = ""
    definition: str = ""  # the column definition as written (add/change/modify)
    default: str | None = None  # the DEFAULT clause as written
    constant_default: bool = True
    after: str | None = None  # AFTER column; "" for FIRST; None for the end


@dataclass(slots=True)
class Ddl:
    """What one DDL statement does, as far as Ark follows it."""

    kind: str  # alter, create, drop, rename, truncate, other
    tables: list[str] = field(default_factory=list)  # schema.table (renames: old, new pairs flattened)
    steps: list[Step] = field(default_factory=list)


def _qualified(toks: list[Tok], i: int, schema: str) -> tuple[str, int]:
    first = toks[i].text
    if i + 2 < len(toks) and toks[i + 1].text == "." and toks[i + 1].kind == "op":
        return f"{first}.{toks[i + 2].text}", i + 3
    return f"{schema}.{first}", i + 1


def _skip_if(toks: list[Tok], i: int, *words: str) -> int:
    j = i
    for w in words:
        if j < len(toks) and toks[j].is_word(w):
            j += 1
        else:
            return i
    return j


def _split_specs(toks: list[Tok]) -> list[list[Tok]]:
    specs: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.kind == "op" and t.text == "(":
            depth += 1
        elif t.kind == "op" and t.text == ")":
            depth -= 1
        if depth == 0 and t.kind == "op" and t.text == ",":
            specs.append([])
            continue
        specs[-1].append(t)
    return [s for s in specs if s]


def _definition(spec: list[Tok]) -> tuple[str, str | None, bool, str | None]:
    """(definition text, DEFAULT clause, whether it is a constant, AFTER column) of a column definition."""
    after: str | None = None
    end = len(spec)
    if end >= 2 and spec[-2].is_word("AFTER"):
        after, end = spec[-1].text, end - 2
    elif end >= 1 and spec[-1].is_word("FIRST"):
        after, end = "", end - 1
    body = spec[:end]
    default: str | None = None
    constant = True
    depth = 0
    for k, t in enumerate(body):
        if t.kind == "op" and t.text in "()":
            depth += 1 if t.text == "(" else -1
        if depth == 0 and t.is_word("DEFAULT") and k + 1 < len(body):
            nxt = body[k + 1]
            if nxt.kind == "op" and nxt.text in "-+" and k + 2 < len(body) and body[k + 2].kind == "num":
                default = nxt.raw + body[k + 2].raw
            elif nxt.kind in ("str", "num") or nxt.is_word("NULL", "TRUE", "FALSE"):
                default = nxt.raw
            elif nxt.kind == "word" and nxt.text.lower() in ("b", "x", "_binary", "_utf8mb4", "_latin1") \
                    and k + 2 < len(body) and body[k + 2].kind == "str":
                default = nxt.raw + body[k + 2].raw
            else:
                default, constant = " ".join(x.raw for x in body[k + 1:]), False
    return " ".join(t.raw for t in body), default, constant, after


_NON_COLUMN = ("INDEX", "KEY", "UNIQUE", "PRIMARY", "FOREIGN", "CONSTRAINT", "FULLTEXT", "SPATIAL", "CHECK",
               "PERIOD", "SYSTEM", "PARTITION")


def _alter_step(spec: list[Tok]) -> Step:
    head = spec[0]
    if head.is_word("ADD"):
        i = _skip_if(spec, 1, "COLUMN")
        i = _skip_if(spec, i, "IF", "NOT", "EXISTS")
        if i < len(spec) and spec[i].is_word(*_NON_COLUMN):
            return Step("other")
        if i < len(spec) and spec[i].kind == "op" and spec[i].text == "(":
            return Step("unknown", definition=" ".join(t.raw for t in spec))  # ADD (a, b): rare, not followed
        definition, default, constant, after = _definition(spec[i + 1:])
        return Step("add", spec[i].text, definition=definition, default=default, constant_default=constant,
                    after=after)
    if head.is_word("DROP"):
        i = _skip_if(spec, 1, "COLUMN")
        i = _skip_if(spec, i, "IF", "EXISTS")
        if spec[1].is_word(*_NON_COLUMN):
            return Step("other")
        return Step("drop", spec[i].text)
    if head.is_word("CHANGE"):
        i = _skip_if(spec, 1, "COLUMN")
        i = _skip_if(spec, i, "IF", "EXISTS")
        definition, default, constant, after = _definition(spec[i + 2:])
        return Step("change", spec[i].text, spec[i + 1].text, definition, default, constant, after)
    if head.is_word("MODIFY"):
        i = _skip_if(spec, 1, "COLUMN")
        i = _skip_if(spec, i, "IF", "EXISTS")
        definition, default, constant, after = _definition(spec[i + 1:])
        return Step("modify", spec[i].text, definition=definition, default=default, after=after)
    if head.is_word("RENAME"):
        if len(spec) > 1 and spec[1].is_word("COLUMN"):
            i = _skip_if(spec, 2, "IF", "EXISTS")
            return Step("rename", spec[i].text, spec[i + 2].text)
        if len(spec) > 1 and spec[1].is_word("INDEX", "KEY"):
            return Step("other")
        return Step("rename_table", new_name=spec[-1].text)
    if head.is_word("ALTER") and len(spec) > 1 and spec[1].is_word("INDEX", "KEY"):
        return Step("other")
    if head.is_word("ALTER"):  # ALTER [COLUMN] c SET DEFAULT / DROP DEFAULT: no change to existing rows
        return Step("other")
    if head.is_word("ENGINE", "COMMENT", "AUTO_INCREMENT", "ROW_FORMAT", "FORCE", "ALGORITHM", "LOCK",
                    "DEFAULT", "CHARACTER", "CHARSET", "COLLATE", "ENABLE", "DISABLE", "KEY_BLOCK_SIZE",
                    "STATS_PERSISTENT", "PACK_KEYS", "CHECKSUM", "ORDER", "ADD_INDEX"):
        return Step("other")
    if head.is_word("CONVERT"):
        return Step("unknown", definition=" ".join(t.raw for t in spec))
    return Step("unknown", definition=" ".join(t.raw for t in spec))


def parse(sql: str, schema: str) -> Ddl | None:
    """The DDL of a query event's statement (None for anything that is not DDL on tables)."""
    toks = tokens(sql)
    if not toks or toks[0].kind != "word":
        return None
    verb = toks[0].text.upper()
    try:
        if verb == "ALTER":
            i = _skip_if(toks, 1, "ONLINE")
            i = _skip_if(toks, i, "IGNORE")
            if not toks[i].is_word("TABLE"):
                return None
            i = _skip_if(toks, i + 1, "IF", "EXISTS")
            table, i = _qualified(toks, i, schema)
            i = _skip_if(toks, i, "WAIT")
            if i < len(toks) and toks[i].kind == "num":
                i += 1
            i = _skip_if(toks, i, "NOWAIT")
            steps = [_alter_step(s) for s in _split_specs(toks[i:])]
            return Ddl("alter", [table], steps)
        if verb == "CREATE":
            i = _skip_if(toks, 1, "OR", "REPLACE")
            i = _skip_if(toks, i, "TEMPORARY")
            if not toks[i].is_word("TABLE"):
                return None
            i = _skip_if(toks, i + 1, "IF", "NOT", "EXISTS")
            table, _ = _qualified(toks, i, schema)
            return Ddl("create", [table])
        if verb == "DROP":
            i = _skip_if(toks, 1, "TEMPORARY")
            if not toks[i].is_word("TABLE", "TABLES"):
                return None
            i = _skip_if(toks, i + 1, "IF", "EXISTS")
            tables = []
            while i < len(toks):
                table, i = _qualified(toks, i, schema)
                tables.append(table)
                if i < len(toks) and toks[i].text == ",":
                    i += 1
                else:
                    break
            return Ddl("drop", tables)
        if verb == "RENAME" and toks[1].is_word("TABLE", "TABLES"):
            tables, i = [], 2
            while i < len(toks):
                old, i = _qualified(toks, i, schema)
                i = _skip_if(toks, i, "TO")
                new, i = _qualified(toks, i, schema)
                tables += [old, new]
                if i < len(toks) and toks[i].text == ",":
                    i += 1
                else:
                    break
            return Ddl("rename", tables)
        if verb == "TRUNCATE":
            i = _skip_if(toks, 1, "TABLE")
            table, _ = _qualified(toks, i, schema)
            return Ddl("truncate", [table])
    except IndexError:
        return Ddl("other")
    return None


@dataclass(slots=True)
class Predicted:
    """One column of the shape predicted after DDL: its old name (None when added) and its added step."""

    name: str
    old: str | None
    step: Step | None = None


class Evolution:
    """The column steps of one table since its last table map, replayed on its column names."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.columns = [Predicted(n, n) for n in names]
        self.followable = True
        self.why = ""

    def _index(self, name: str) -> int:
        for i, c in enumerate(self.columns):
            if c.name.casefold() == name.casefold():
                return i
        raise KeyError(name)

    def _place(self, col: Predicted, after: str | None) -> None:
        if after is None:
            self.columns.append(col)
        elif after == "":
            self.columns.insert(0, col)
        else:
            self.columns.insert(self._index(after) + 1, col)

    def apply(self, steps: list[Step]) -> None:
        """Replay ``steps``; anything not understood makes the result unfollowable (with why)."""
        for s in steps:
            try:
                if s.op == "add":
                    self._place(Predicted(s.name, None, s), s.after)
                elif s.op == "drop":
                    del self.columns[self._index(s.name)]
                elif s.op in ("rename", "change", "modify"):
                    i = self._index(s.name)
                    col = self.columns[i]
                    col.name = s.new_name or col.name
                    if s.after is not None:
                        del self.columns[i]
                        self._place(col, s.after)
                elif s.op == "unknown":
                    self.followable, self.why = False, f"a clause Ark does not follow: {s.definition[:80]}"
                elif s.op == "rename_table":
                    self.followable, self.why = False, f"the table was renamed to {s.new_name}"
            except (KeyError, ValueError):
                self.followable, self.why = False, f"step {s.op} {s.name} does not match the columns Ark saw"

    def matches(self, names: tuple[str, ...]) -> bool:
        """True when the replayed names are exactly ``names`` (the table map after the DDL)."""
        return [c.name for c in self.columns] == list(names)

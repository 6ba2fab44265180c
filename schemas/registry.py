"""The committed Avro schemas: loading, fingerprints and version lookup.

Schemas live in ``schemas/avro/<name>.v<N>.avsc``. The highest ``N`` of a name is the version this
build writes; every committed version stays readable, so old entries in retention still decode.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.errors import UnknownSchema

AVRO_DIR = Path(__file__).parent / "avro"
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One committed schema file."""

    name: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any
    fingerprint: str


def _load(path: Path) -> SchemaVersion:
    match = _FILE.match(path.name)
    if not match:
        raise UnknownSchema(f"schema file {path.name} does not follow <name>.v<N>.avsc")
    raw = json.loads(path.read_text())
    canonical = to_parsing_canonical_form(parse_schema(raw, _write_hint=False))
    # Parsed *with* fastavro's hint (``__fastavro_parsed``, ``__named_schemas``): without it every
    # schemaless_reader/writer call parsed the whole schema again, ~30 us per entry whatever its size,
    # which was most of the apply loop's decode time on small transactions (bench/pg_drain.py).
    parsed = parse_schema(raw)
    return SchemaVersion(
        name=match["name"],
        version=int(match["version"]),
        path=path,
        raw=raw,
        parsed=parsed,
        fingerprint=fingerprint(canonical, "CRC-64-AVRO"),
    )


@cache
def all_versions() -> tuple[SchemaVersion, ...]:
    """Every committed schema version, sorted by name then version."""
    found = [_load(p) for p in sorted(AVRO_DIR.glob("*.avsc"))]
    return tuple(sorted(found, key=lambda s: (s.name, s.version)))


@cache
def current(name: str) -> SchemaVersion:
    """The newest version of ``name``: the one this build writes (cached: every entry asks)."""
    versions = [s for s in all_versions() if s.name == name]
    if not versions:
        raise UnknownSchema(f"no committed schema named {name!r} in {AVRO_DIR}")
    return versions[-1]


@cache
def by_fingerprint(fp: str) -> SchemaVersion:
    """The committed version whose canonical form has fingerprint ``fp`` (cached; unknown ones raise, uncached)."""
    for schema in all_versions():
        if schema.fingerprint == fp:
            return schema
    raise UnknownSchema(f"schema fingerprint {fp} is not one this build knows; upgrade Ark on this node")

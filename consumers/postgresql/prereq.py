"""Prerequisites of a PostgreSQL standby, each with its fix (used by ``ark check``)."""

from __future__ import annotations

from typing import Any

from common.settings import StandbySettings
from consumers.base import Problem
from consumers.postgresql.sql import quote_ident

#: One row: version, in recovery, may create schema ark, may create temp tables, may ALTER DATABASE,
#: database, user.
PREREQ_SQL = """
SELECT current_setting('server_version_num')::int,
       pg_is_in_recovery(),
       has_database_privilege(current_database(), 'CREATE')
         OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'ark' AND pg_has_role(nspowner, 'USAGE')),
       has_database_privilege(current_database(), 'TEMP'),
       pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
         OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       current_database(),
       current_user
"""


def prerequisite_problems(row: tuple[Any, ...], settings: StandbySettings) -> list[Problem]:
    """The problems a row of :data:`PREREQ_SQL` shows."""
    version, recovery, can_schema, can_temp, owner, db, user = row
    qdb, quser = quote_ident(str(db)), quote_ident(str(user))
    problems: list[Problem] = []
    if version < 120000:
        problems.append(Problem(f"standby {settings.name} runs PostgreSQL {version}; Ark needs 12 or later",
                                "upgrade the standby's PostgreSQL"))
    if recovery:
        problems.append(Problem(f"standby {settings.name} is in recovery (a physical replica)",
                                "point Ark at a writable (primary) PostgreSQL server"))
    if not can_schema:
        problems.append(Problem(f"user {user} cannot create schema ark in database {db}",
                                f"GRANT CREATE ON DATABASE {qdb} TO {quser}"))
    if not can_temp:
        problems.append(Problem(f"user {user} cannot create temporary tables in {db} (set-based apply needs "
                                "them)", f"GRANT TEMP ON DATABASE {qdb} TO {quser}"))
    if settings.read_only and not owner:
        problems.append(Problem(f"user {user} does not own database {db}, so Ark cannot make it read-only for "
                                "other sessions",
                                f"ALTER DATABASE {qdb} OWNER TO {quser}, or set read_only: false and revoke "
                                "INSERT/UPDATE/DELETE/TRUNCATE from other roles"))
    return problems

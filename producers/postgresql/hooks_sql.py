"""The SQL of Ark's hooks on a PostgreSQL primary: schema ``ark_capture``, its functions and event triggers.

What the hooks do, and the rules they keep (README, "DDL on the primary" and "Never harm a primary"):

* **Never break the user's work.** Every event trigger function runs its work inside a block that catches
  every error. When it cannot describe or record a change, it records *that* it could not (a message in
  the WAL, else a row in ``ark_capture.failures``, else a WARNING to the client) and returns: the user's
  DDL commits. The capture resyncs whatever it was not told about.
* **The keyless policy, in the user's transaction** (``ark_capture.apply_policy``): a table that appears
  or loses its key gets ``REPLICA IDENTITY FULL`` (policy ``full``), moves to the group's insert-only
  publication (``insert-only``) or out of its publications (``skip``) before the DDL commits, so the
  application's next UPDATE or DELETE never fails because Ark publishes the table. A table added to a
  table-list publication here is added in the CREATE TABLE's own transaction, so no row is missed; one
  added after rows were written to it (CREATE TABLE AS, a table renamed into scope, a key added back) is
  marked for a resync.
* **The catalog facts at the moment of the DDL** (``ark_capture.table_facts`` and friends) travel in a
  transactional logical message (prefix ``ark.ddl``) at the DDL's exact place in the WAL, and are kept
  in ``ark_capture.shapes`` keyed by that message's LSN, so a capture decoding older WAL reads the
  shape that was in force there, never the live catalog.

Every function is ``SECURITY DEFINER`` (the trigger fires for DDL of any role, which may not write to
``ark_capture``) with ``search_path = pg_catalog, pg_temp`` and schema-qualified references, so what a
role puts in its own schemas cannot change what they run. ``META_COLUMNS`` is the one exception: it
runs with the capture connection's own search path (``{capture_path}``), so the type names and default
expressions it reads are exactly those of :func:`producers.postgresql.catalog.column_details` and a shape
read from the facts hashes the same as one read from the catalog.
"""

from __future__ import annotations

from typing import Final

#: The message prefix of every hook message (the capture ignores other prefixes).
PREFIX: Final = "ark.ddl"
#: Version of the facts and message format (in every payload as ``v``).
FORMAT: Final = 1
SCHEMA: Final = "ark_capture"
EVENT_TRIGGERS: Final = {"ark_capture_ddl": ("ddl_command_end", "on_ddl_end"),
                         "ark_capture_drop": ("sql_drop", "on_sql_drop"),
                         "ark_capture_rewrite": ("table_rewrite", "on_table_rewrite")}

_DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
_SQL_DEFINER = "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

TABLES: Final = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {SCHEMA}.groups (
    group_name text PRIMARY KEY,
    patterns text[] NOT NULL,
    keyless text NOT NULL CHECK (keyless IN ('full', 'insert-only', 'skip')),
    publication text NOT NULL,
    inserts_publication text NOT NULL,
    table_list boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.shapes (
    objid oid NOT NULL,
    lsn pg_lsn NOT NULL,
    facts jsonb NOT NULL,
    PRIMARY KEY (objid, lsn)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.identity_full (
    relid oid PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.failures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    tag text NOT NULL,
    relids oid[] NOT NULL DEFAULT '{{}}',
    objects text[] NOT NULL DEFAULT '{{}}',
    error text NOT NULL,
    statement text NOT NULL DEFAULT '',
    handled boolean NOT NULL DEFAULT false
);
COMMENT ON SCHEMA {SCHEMA} IS 'Ark capture: DDL hooks and what they recorded (README: DDL on the primary)';
"""

#: Columns as :func:`producers.postgresql.catalog.column_details` reads them (the capture's search path).
META_COLUMNS: Final = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.meta_columns(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {{capture_path}} AS $fn$
SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
         'attnum', a.attnum, 'name', a.attname, 'typoid', a.atttypid, 'typmod', a.atttypmod,
         'type', pg_catalog.format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull,
         'generated', a.attgenerated <> '',
         'default', CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,
         'missing', CASE WHEN a.atthasmissing THEN (a.attmissingval::pg_catalog.text::pg_catalog.text[])[1] END)
       ORDER BY a.attnum), '[]'::pg_catalog.jsonb)
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$fn$;
"""

FUNCTIONS: Final = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.qualified(rel oid) RETURNS text {_SQL_DEFINER} AS $fn$
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel
$fn$;

-- The same columns, every name and expression schema-qualified (what a standby's DDL needs).
CREATE OR REPLACE FUNCTION {SCHEMA}.ddl_columns(rel oid) RETURNS jsonb {_SQL_DEFINER} AS $fn$
SELECT coalesce(jsonb_agg(jsonb_build_object(
         'attnum', a.attnum, 'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
         'not_null', a.attnotnull, 'identity', a.attidentity,
         'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
         'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
         'collation', CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                           THEN (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
                                 JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
         'usertype', CASE WHEN tn.nspname NOT IN ('pg_catalog', 'information_schema') THEN a.atttypid
                          WHEN t.typelem <> 0 AND en.nspname NOT IN ('pg_catalog', 'information_schema')
                          THEN t.typelem END)
       ORDER BY a.attnum), '[]'::jsonb)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type et ON et.oid = t.typelem LEFT JOIN pg_namespace en ON en.oid = et.typnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.type_facts(typ oid) RETURNS jsonb {_SQL_DEFINER} AS $fn$
SELECT jsonb_build_object(
  'v', {FORMAT}, 'kind', 'type', 'oid', t.oid, 'schema', n.nspname, 'name', t.typname, 'typtype', t.typtype,
  'qualified', format('%I.%I', n.nspname, t.typname),
  'labels', CASE WHEN t.typtype = 'e' THEN (SELECT jsonb_agg(jsonb_build_array(e.oid, e.enumlabel)
                                                             ORDER BY e.enumsortorder)
                                            FROM pg_enum e WHERE e.enumtypid = t.oid) END,
  'base', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
  'not_null', t.typnotnull,
  'default', CASE WHEN t.typtype = 'd' THEN pg_get_expr(t.typdefaultbin, 0) END,
  'checks', CASE WHEN t.typtype = 'd' THEN (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'oid', co.oid, 'name', co.conname, 'def', pg_get_constraintdef(co.oid)) ORDER BY co.conname), '[]')
                 FROM pg_constraint co WHERE co.contypid = t.oid) END,
  'attributes', CASE WHEN t.typtype = 'c' THEN (SELECT jsonb_agg(jsonb_build_object(
                   'attnum', a.attnum, 'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
                   ORDER BY a.attnum) FROM pg_attribute a
                 WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
  'range', CASE WHEN t.typtype = 'r' THEN (SELECT jsonb_build_object(
                   'subtype', format_type(r.rngsubtype, NULL),
                   'multirange', (SELECT format('%I.%I', mn.nspname, mt.typname) FROM pg_type mt
                                  JOIN pg_namespace mn ON mn.oid = mt.typnamespace WHERE mt.oid = r.rngmultitypid),
                   'subdiff', CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END,
                   'canonical', CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END)
                 FROM pg_range r WHERE r.rngtypid = t.oid) END,
  'table_rowtype', t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c'))
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = typ
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.sequence_facts(seq oid) RETURNS jsonb {_SQL_DEFINER} AS $fn$
SELECT jsonb_build_object(
  'v', {FORMAT}, 'kind', 'sequence', 'oid', c.oid, 'schema', n.nspname, 'name', c.relname,
  'qualified', format('%I.%I', n.nspname, c.relname),
  'type', format_type(s.seqtypid, NULL), 'increment', s.seqincrement::text, 'min', s.seqmin::text,
  'max', s.seqmax::text, 'start', s.seqstart::text, 'cache', s.seqcache::text, 'cycle', s.seqcycle,
  'owned_by', (SELECT jsonb_build_object('table', {SCHEMA}.qualified(d.refobjid), 'column', a.attname)
               FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                 AND d.deptype IN ('a', 'i') LIMIT 1),
  'identity', EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'i'))
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE s.seqrelid = seq
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.table_facts(rel oid) RETURNS jsonb {_SQL_DEFINER} AS $fn$
SELECT jsonb_build_object(
  'v', {FORMAT}, 'kind', 'table', 'oid', c.oid, 'schema', n.nspname, 'name', c.relname,
  'qualified', format('%I.%I', n.nspname, c.relname),
  'relkind', c.relkind, 'replident', c.relreplident, 'persistence', c.relpersistence,
  'columns', {SCHEMA}.meta_columns(c.oid),
  'ddl', {SCHEMA}.ddl_columns(c.oid),
  'indexes', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                 'oid', i.indexrelid, 'name', ic.relname, 'def', pg_get_indexdef(i.indexrelid),
                 'primary', i.indisprimary, 'unique', i.indisunique, 'valid', i.indisvalid,
                 'immediate', i.indimmediate,
                 'replident', i.indisreplident, 'keys', i.indkey::int2[], 'partial', i.indpred IS NOT NULL,
                 'expr', i.indexprs IS NOT NULL,
                 'constraint', (SELECT co.conname FROM pg_constraint co
                                WHERE co.conindid = i.indexrelid AND co.conrelid = c.oid
                                  AND co.contype IN ('p', 'u', 'x')))
               ORDER BY i.indisprimary DESC, i.indexrelid), '[]')
              FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid),
  'constraints', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'oid', co.oid, 'name', co.conname, 'type', co.contype, 'def', pg_get_constraintdef(co.oid),
                     'validated', co.convalidated, 'local', co.conislocal,
                     'ref', CASE WHEN co.contype = 'f' THEN {SCHEMA}.qualified(co.confrelid) END)
                   ORDER BY co.conname), '[]')
                  FROM pg_constraint co WHERE co.conrelid = c.oid),
  'partkey', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
  'bound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
  'parent', (SELECT {SCHEMA}.qualified(h.inhparent) FROM pg_inherits h WHERE h.inhrelid = c.oid AND c.relispartition),
  'published', (SELECT coalesce(jsonb_agg(DISTINCT pt.pubname), '[]') FROM pg_publication_tables pt
                WHERE pt.schemaname = n.nspname AND pt.tablename = c.relname),
  'types', (SELECT coalesce(jsonb_agg({SCHEMA}.type_facts(u.t)), '[]')
            FROM (SELECT DISTINCT (x->>'usertype')::oid AS t FROM jsonb_array_elements({SCHEMA}.ddl_columns(c.oid)) x
                  WHERE x->>'usertype' IS NOT NULL) u))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel
$fn$;

-- Any other object a standby may need, as the statement that creates it (NULL when not followed).
CREATE OR REPLACE FUNCTION {SCHEMA}.object_facts(cls oid, obj oid) RETURNS jsonb {_DEFINER} AS $fn$
DECLARE
  kind "char";
BEGIN
  IF cls = 'pg_type'::regclass THEN
    RETURN {SCHEMA}.type_facts(obj);
  ELSIF cls = 'pg_class'::regclass THEN
    SELECT relkind INTO kind FROM pg_class WHERE oid = obj;
    IF kind = 'S' THEN
      RETURN {SCHEMA}.sequence_facts(obj);
    ELSIF kind = 'v' THEN
      RETURN (SELECT jsonb_build_object('v', {FORMAT}, 'kind', 'view', 'oid', obj,
                     'qualified', {SCHEMA}.qualified(obj),
                     'create', format('CREATE OR REPLACE VIEW %s AS %s', {SCHEMA}.qualified(obj),
                                      pg_get_viewdef(obj))));
    ELSIF kind = 'c' THEN
      RETURN {SCHEMA}.type_facts((SELECT reltype FROM pg_class WHERE oid = obj));
    END IF;
  ELSIF cls = 'pg_proc'::regclass THEN
    IF (SELECT prokind FROM pg_proc WHERE oid = obj) IN ('f', 'p') THEN
      RETURN (SELECT jsonb_build_object('v', {FORMAT}, 'kind', 'function', 'oid', obj,
                     'qualified', format('%I.%I', n.nspname, p.proname),
                     'create', pg_get_functiondef(obj))
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = obj);
    END IF;
  ELSIF cls = 'pg_namespace'::regclass THEN
    RETURN (SELECT jsonb_build_object('v', {FORMAT}, 'kind', 'schema', 'oid', obj, 'name', nspname,
                                      'qualified', format('%I', nspname))
            FROM pg_namespace WHERE oid = obj);
  ELSIF cls = 'pg_extension'::regclass THEN
    RETURN (SELECT jsonb_build_object('v', {FORMAT}, 'kind', 'extension', 'oid', obj, 'name', e.extname,
                                      'schema', n.nspname, 'version', e.extversion,
                                      'qualified', format('%I', e.extname))
            FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.oid = obj);
  ELSIF cls = 'pg_trigger'::regclass THEN
    RETURN (SELECT jsonb_build_object('v', {FORMAT}, 'kind', 'trigger', 'oid', obj, 'name', t.tgname,
                                      'table', {SCHEMA}.qualified(t.tgrelid), 'create', pg_get_triggerdef(obj),
                                      'qualified', format('%I on %s', t.tgname, {SCHEMA}.qualified(t.tgrelid)))
            FROM pg_trigger t WHERE t.oid = obj AND NOT t.tgisinternal AND t.tgconstraint = 0);
  END IF;
  RETURN NULL;
END
$fn$;

-- The table a command is about, when it is about one (a column, an index, a constraint, a trigger).
CREATE OR REPLACE FUNCTION {SCHEMA}.table_of(cls oid, obj oid) RETURNS oid {_SQL_DEFINER} AS $fn$
SELECT CASE
  WHEN cls = 'pg_class'::regclass THEN
    (SELECT CASE WHEN c.relkind IN ('r', 'p') THEN c.oid
                 WHEN c.relkind IN ('i', 'I') THEN (SELECT indrelid FROM pg_index WHERE indexrelid = c.oid) END
     FROM pg_class c WHERE c.oid = obj)
  WHEN cls = 'pg_constraint'::regclass THEN (SELECT NULLIF(conrelid, 0) FROM pg_constraint WHERE oid = obj)
  WHEN cls = 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = obj)
END
$fn$;

-- Whether some group's capture follows this table (its patterns name it).
CREATE OR REPLACE FUNCTION {SCHEMA}.in_scope(rel oid) RETURNS boolean {_SQL_DEFINER} AS $fn$
SELECT EXISTS (SELECT 1 FROM {SCHEMA}.groups g, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.oid = rel AND (n.nspname || '.' || c.relname) ~ ANY (g.patterns))
$fn$;

-- The keyless policy of every group that follows the table (see the module docstring). Returns what it did.
CREATE OR REPLACE FUNCTION {SCHEMA}.apply_policy(rel oid) RETURNS jsonb {_DEFINER} AS $fn$
DECLARE
  g record; c record; acts jsonb := '[]'; keyless boolean; name text; in_main boolean; in_ins boolean;
  covered boolean; resync boolean := false;
BEGIN
  SELECT cl.relkind, cl.relpersistence, cl.relreplident, n.nspname, cl.relname,
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = cl.oid AND i.indisprimary AND i.indimmediate)
           AS has_pk,
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = cl.oid AND i.indisreplident AND i.indisvalid) AS has_ri
    INTO c FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = rel;
  IF NOT FOUND OR c.relkind <> 'r' OR c.relpersistence <> 'p' THEN
    RETURN acts;
  END IF;
  name := format('%I.%I', c.nspname, c.relname);
  keyless := (c.relreplident = 'd' AND NOT c.has_pk) OR c.relreplident = 'n' OR (c.relreplident = 'i' AND NOT c.has_ri);
  FOR g IN SELECT * FROM {SCHEMA}.groups WHERE (c.nspname || '.' || c.relname) ~ ANY (patterns) ORDER BY group_name LOOP
    in_main := EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                       WHERE p.pubname = g.publication AND pr.prrelid = rel);
    in_ins := EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                      WHERE p.pubname = g.inserts_publication AND pr.prrelid = rel);
    covered := EXISTS (SELECT 1 FROM pg_publication_tables pt WHERE pt.pubname = g.publication
                         AND pt.schemaname = c.nspname AND pt.tablename = c.relname);
    IF keyless AND (g.keyless = 'full' OR NOT g.table_list) THEN
      -- a schema publication publishes every table of the schema: only FULL keeps its UPDATEs working
      IF c.relreplident <> 'f' THEN
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', name);
        INSERT INTO {SCHEMA}.identity_full (relid) VALUES (rel) ON CONFLICT DO NOTHING;
        c.relreplident := 'f';
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name, 'did', 'replica identity full');
      END IF;
    END IF;
    IF NOT keyless AND c.relreplident = 'f' AND c.has_pk
       AND EXISTS (SELECT 1 FROM {SCHEMA}.identity_full WHERE relid = rel) THEN
      -- Ark set FULL when the key was gone; the key is back: log only the key again
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY DEFAULT', name);
      DELETE FROM {SCHEMA}.identity_full WHERE relid = rel;
      c.relreplident := 'd';
      acts := acts || jsonb_build_object('group', g.group_name, 'table', name, 'did', 'replica identity default');
    END IF;
    IF NOT g.table_list THEN
      CONTINUE;
    END IF;
    IF keyless AND g.keyless = 'insert-only' THEN
      IF in_main THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', g.publication, name);
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name,
                                           'did', 'removed from ' || g.publication);
      END IF;
      IF NOT in_ins THEN
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', g.inserts_publication, name);
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name,
                                           'did', 'added to ' || g.inserts_publication || ' (inserts only)');
        -- a table that was not published at all holds rows the standby never saw
        resync := resync OR (NOT in_main AND {SCHEMA}.has_rows(rel));
      END IF;
    ELSIF keyless AND g.keyless = 'skip' THEN
      IF in_main THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', g.publication, name);
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name,
                                           'did', 'removed from ' || g.publication);
      END IF;
      IF in_ins THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', g.inserts_publication, name);
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name,
                                           'did', 'removed from ' || g.inserts_publication);
      END IF;
    ELSE
      IF in_ins THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', g.inserts_publication, name);
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name,
                                           'did', 'removed from ' || g.inserts_publication);
      END IF;
      IF NOT covered THEN
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', g.publication, name);
        acts := acts || jsonb_build_object('group', g.group_name, 'table', name, 'did', 'added to ' || g.publication);
        -- rows written before now (or while only its inserts were published) are not in the stream
        IF in_ins OR {SCHEMA}.has_rows(rel) THEN
          resync := true;
        END IF;
      END IF;
    END IF;
  END LOOP;
  IF resync THEN
    acts := acts || jsonb_build_object('table', name, 'oid', rel, 'resync', true);
  END IF;
  RETURN acts;
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.has_rows(rel oid) RETURNS boolean {_DEFINER} AS $fn$
DECLARE
  found boolean;
BEGIN
  EXECUTE format('SELECT EXISTS (SELECT FROM %s)', {SCHEMA}.qualified(rel)) INTO found;
  RETURN found;
END
$fn$;

-- Put a payload in the WAL (transactional: it commits or rolls back with the DDL) and keep the shapes of the tables,
-- types and sequences it carries, keyed by the message's LSN (the end of its WAL record: every later change of the
-- object is at or after it).
CREATE OR REPLACE FUNCTION {SCHEMA}.emit(payload jsonb) RETURNS pg_lsn {_DEFINER} AS $fn$
DECLARE
  at pg_lsn;
BEGIN
  at := pg_logical_emit_message(true, '{PREFIX}', convert_to(payload::text, 'UTF8'));
  INSERT INTO {SCHEMA}.shapes (objid, lsn, facts)
  SELECT o.key::oid, at, o.value FROM jsonb_each(coalesce(payload->'objects', '{{}}')) o
  WHERE o.value->>'kind' IN ('table', 'type', 'sequence')
  ON CONFLICT (objid, lsn) DO UPDATE SET facts = EXCLUDED.facts;
  RETURN at;
END
$fn$;

-- The hook could not describe or record a change: say so (the capture resyncs those tables); never raise.
CREATE OR REPLACE FUNCTION {SCHEMA}.record_failure(tag text, rels oid[], err text) RETURNS void {_DEFINER} AS $fn$
DECLARE
  names text[];
BEGIN
  BEGIN
    names := ARRAY(SELECT coalesce({SCHEMA}.qualified(x), x::text) FROM unnest(rels) x);
    PERFORM {SCHEMA}.emit(jsonb_build_object(
      'v', {FORMAT}, 'event', 'failed', 'tag', tag, 'error', err, 'statement', left(current_query(), 10000),
      'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object('oid', x, 'name', {SCHEMA}.qualified(x))), '[]')
                 FROM unnest(rels) x),
      'objects', (SELECT coalesce(jsonb_object_agg(x::text, jsonb_build_object('v', {FORMAT}, 'kind', 'table',
                                                                             'unknown', true)), '{{}}')
                  FROM unnest(rels) x)));
  EXCEPTION WHEN OTHERS THEN
    BEGIN
      INSERT INTO {SCHEMA}.failures (tag, relids, objects, error, statement)
      VALUES (tag, coalesce(rels, '{{}}'), coalesce(names, '{{}}'),
              err || '; recording it in the WAL failed too: ' || SQLERRM, left(current_query(), 10000));
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'Ark could not record % (%; %): the capture cannot follow it', tag, err, SQLERRM
        USING HINT = 'resync the tables it changed on every standby (ark resync STANDBY --table SCHEMA.TABLE)';
    END;
  END;
END
$fn$;

-- Never raises: each part catches its own errors, and records that it could not (see the module docstring).
CREATE OR REPLACE FUNCTION {SCHEMA}.failed(tag text, rels oid[], err text) RETURNS void {_DEFINER} AS $fn$
BEGIN
  PERFORM {SCHEMA}.record_failure(tag, rels, err);
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'Ark could not record %: % (%)', tag, err, SQLERRM;
END
$fn$;

-- The keyless policy of each table, each in a block of its own: a failure to describe or record the DDL
-- afterwards never undoes it, and its own failure is reported (the capture applies it within seconds).
CREATE OR REPLACE FUNCTION {SCHEMA}.policy_of(tables oid[]) RETURNS jsonb {_DEFINER} AS $fn$
DECLARE
  rel oid; acts jsonb := '[]';
BEGIN
  FOREACH rel IN ARRAY tables LOOP
    BEGIN
      acts := acts || {SCHEMA}.apply_policy(rel);
    EXCEPTION WHEN OTHERS THEN
      acts := acts || jsonb_build_object('table', rel::regclass::text, 'error', SQLERRM);
    END;
  END LOOP;
  RETURN acts;
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.on_ddl_end() RETURNS event_trigger {_DEFINER} AS $fn$
DECLARE
  r record; c jsonb; rel oid; tables oid[] := '{{}}'; cmds jsonb := '[]'; objs jsonb := '{{}}'; acts jsonb := '[]';
  f jsonb;
BEGIN
  IF current_setting('ark.hook_busy', true) = 'on' THEN
    RETURN;  -- Ark's own DDL, run by this hook
  END IF;
  PERFORM set_config('ark.hook_busy', 'on', true);
  BEGIN  -- 1. what the statement did
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
      CONTINUE WHEN r.in_extension OR r.schema_name = '{SCHEMA}' OR r.schema_name LIKE 'pg\\_temp%'
                 OR r.schema_name LIKE 'pg\\_toast%';
      cmds := cmds || jsonb_build_object('tag', r.command_tag, 'type', r.object_type, 'identity', r.object_identity,
                                         'schema', r.schema_name, 'oid', r.objid, 'sub', r.objsubid,
                                         'classid', r.classid, 'class', r.classid::regclass::text);
      rel := {SCHEMA}.table_of(r.classid, r.objid);
      IF rel IS NOT NULL AND NOT rel = ANY (tables) THEN
        tables := tables || rel;
      END IF;
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    PERFORM {SCHEMA}.failed(tg_tag, tables, SQLERRM);
    PERFORM set_config('ark.hook_busy', 'off', true);
    RETURN;
  END;
  IF cmds = '[]' THEN
    PERFORM set_config('ark.hook_busy', 'off', true);
    RETURN;
  END IF;
  acts := {SCHEMA}.policy_of(tables);  -- 2. the keyless policy, before the facts (they show what it did)
  BEGIN  -- 3. the facts, into the WAL at this place
    FOR c IN SELECT * FROM jsonb_array_elements(cmds) LOOP
      IF {SCHEMA}.table_of((c->>'classid')::oid, (c->>'oid')::oid) IS NULL
         OR (c->>'classid')::oid = 'pg_trigger'::regclass THEN
        f := {SCHEMA}.object_facts((c->>'classid')::oid, (c->>'oid')::oid);
        IF f IS NOT NULL THEN
          objs := objs || jsonb_build_object(c->>'oid', f);
        END IF;
      END IF;
    END LOOP;
    FOREACH rel IN ARRAY tables LOOP
      objs := objs || jsonb_build_object(rel::text, {SCHEMA}.table_facts(rel));
    END LOOP;
    PERFORM {SCHEMA}.emit(jsonb_build_object(
      'v', {FORMAT}, 'event', 'ddl', 'tag', tg_tag, 'statement', left(current_query(), 100000),
      'search_path', current_setting('search_path'), 'user', session_user::text,
      'commands', cmds, 'objects', objs, 'policy', acts));
  EXCEPTION WHEN OTHERS THEN
    PERFORM {SCHEMA}.failed(tg_tag, tables, SQLERRM);
  END;
  PERFORM set_config('ark.hook_busy', 'off', true);
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.on_sql_drop() RETURNS event_trigger {_DEFINER} AS $fn$
DECLARE
  r record; drops jsonb := '[]'; acts jsonb := '[]'; keyless oid[] := '{{}}';
BEGIN
  IF current_setting('ark.hook_busy', true) = 'on' THEN
    RETURN;
  END IF;
  PERFORM set_config('ark.hook_busy', 'on', true);
  BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
      CONTINUE WHEN r.is_temporary OR r.schema_name = '{SCHEMA}' OR r.schema_name LIKE 'pg\\_toast%';
      drops := drops || jsonb_build_object('type', r.object_type, 'identity', r.object_identity,
                                           'schema', r.schema_name, 'name', r.object_name, 'oid', r.objid,
                                           'original', r.original, 'normal', r.normal,
                                           'address', to_jsonb(r.address_names), 'args', to_jsonb(r.address_args));
    END LOOP;
    -- a dropped replica-identity index leaves its table without a usable key
    keyless := ARRAY(SELECT c.oid FROM pg_class c WHERE c.relkind = 'r' AND c.relreplident = 'i'
                     AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident
                                     AND i.indisvalid));
  EXCEPTION WHEN OTHERS THEN
    PERFORM {SCHEMA}.failed(tg_tag, '{{}}'::oid[], SQLERRM);
    PERFORM set_config('ark.hook_busy', 'off', true);
    RETURN;
  END;
  IF drops = '[]' THEN
    PERFORM set_config('ark.hook_busy', 'off', true);
    RETURN;
  END IF;
  acts := {SCHEMA}.policy_of(keyless);
  BEGIN
    PERFORM {SCHEMA}.emit(jsonb_build_object(
      'v', {FORMAT}, 'event', 'drop', 'tag', tg_tag, 'statement', left(current_query(), 100000),
      'search_path', current_setting('search_path'), 'dropped', drops, 'policy', acts));
  EXCEPTION WHEN OTHERS THEN
    PERFORM {SCHEMA}.failed(tg_tag, '{{}}'::oid[], SQLERRM);
  END;
  PERFORM set_config('ark.hook_busy', 'off', true);
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.on_table_rewrite() RETURNS event_trigger {_DEFINER} AS $fn$
DECLARE
  rel oid;
BEGIN
  IF current_setting('ark.hook_busy', true) = 'on' THEN
    RETURN;
  END IF;
  BEGIN
    rel := pg_event_trigger_table_rewrite_oid();
    PERFORM {SCHEMA}.emit(jsonb_build_object(
      'v', {FORMAT}, 'event', 'rewrite', 'tag', tg_tag, 'oid', rel, 'name', {SCHEMA}.qualified(rel),
      'reason', pg_event_trigger_table_rewrite_reason(), 'statement', left(current_query(), 100000)));
  EXCEPTION WHEN OTHERS THEN
    PERFORM {SCHEMA}.failed(tg_tag, ARRAY[rel], SQLERRM);
  END;
END
$fn$;
"""

#: The shape in force at a WAL position (the newest recorded at or before it).
SHAPE_AT: Final = (f"SELECT facts FROM {SCHEMA}.shapes WHERE objid = %s AND lsn <= %s::pg_lsn "
                   "ORDER BY lsn DESC LIMIT 1")
#: Forget shapes no capture can decode again: below every logical slot of the database, keep the newest one.
PRUNE_SHAPES: Final = f"""
WITH floor AS (SELECT min(confirmed_flush_lsn) AS lsn FROM pg_replication_slots
               WHERE database = current_database() AND slot_type = 'logical')
DELETE FROM {SCHEMA}.shapes s USING floor
WHERE floor.lsn IS NOT NULL AND s.lsn < floor.lsn
  AND EXISTS (SELECT 1 FROM {SCHEMA}.shapes n WHERE n.objid = s.objid AND n.lsn > s.lsn AND n.lsn <= floor.lsn)
"""

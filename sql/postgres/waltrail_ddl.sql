-- Optional, run once per audited database as a superuser (event triggers need one; Postgres 13 or later
-- for gen_random_uuid), and again after each waltrail upgrade that changes it: records in the trail
-- the DDL that changes audited rows' values without a row change, which the WAL stream does not show:
--
--   * ALTER TABLE … ALTER COLUMN … TYPE … USING … (and any other ALTER TABLE that rewrites tables): every
--     row is rewritten, perhaps with other values, and no row change is sent;
--   * ALTER TYPE … RENAME VALUE: every stored label reads as the new one from then on (through domains,
--     arrays, ranges and composite types too);
--   * ALTER TABLE that changes columns without a rewrite (QA43 H3, H4): columns renamed (two swapped by
--     three renames), dropped, added with a constant default (every row reads it), dropped and added again
--     under the same name, retyped to a binary-coercible type (int4 → oid, varchar(10) → varchar(20)).
--     Each ALTER TABLE writes every published table's columns before it (ddl_command_start: its target
--     is not known yet) and the columns of the tables it touched after it; waltrail compares the two.
--     ALTER TYPE too: a typed table's (CREATE TABLE … OF type) columns are its composite type's
--     attributes, renamed, added, dropped or retyped by ALTER TYPE … CASCADE (QA46); and DROP TYPE or
--     DROP DOMAIN … CASCADE, which drops the columns of that type;
--   * any other statement that drops columns by a cascade: DROP EXTENSION, SCHEMA, COLLATION, FUNCTION,
--     OWNED … CASCADE (the columns of an extension's type, a schema's domain, a collation, a generated
--     column calling the function).
--
-- Each writes a transactional logical-decoding message (prefix 'waltrail:ddl') in its own transaction: waltrail turns it into an AUDIT_ACTION_ALTERED item for each mapped table it names, at the
-- DDL's place in the trail, attributed like the transaction's changes. Nothing is stored in any table.
--
-- Cost: every ALTER TABLE and ALTER TYPE statement (on any table or type) reads the columns of every published table and writes
-- them into the WAL, about 40 bytes per column (a database publishing 200 tables of 20 columns: ~160 kB
-- of WAL per ALTER TABLE, decoded by waltrail, which keeps only the mapped tables' columns; 2,000 tables of
-- 20 columns: 1.6 MB and about 0.12 s per ALTER TABLE, measured on Postgres 15).
-- If you configured another attribution.message_prefix, replace 'waltrail:ddl' below by '<prefix>:ddl'.
--
-- The functions run as their owner (SECURITY DEFINER: a migration run by the platform's role needs no right
-- to write logical-decoding messages), so they live in a schema of their own that only a superuser owns,
-- name every catalog object in full and search pg_temp last: nothing another role creates is ever used by
-- them. The script refuses to run if schema waltrail_ddl exists and is owned by anyone else.
-- Dropping the event triggers turns this off again (`waltrail check` and every start then warn):
--   DROP EVENT TRIGGER waltrail_ddl_rewrite, waltrail_ddl_alter_type_start, waltrail_ddl_alter_type,
--     waltrail_ddl_layout_start, waltrail_ddl_layout, waltrail_ddl_drop_type, waltrail_ddl_drop;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
               WHERE n.nspname = 'waltrail_ddl' AND NOT r.rolsuper) THEN
        RAISE EXCEPTION 'schema waltrail_ddl exists and is owned by a role that is not a superuser: drop it '
            '(or give it to a superuser) before installing the DDL event triggers';
    END IF;
END
$$;
CREATE SCHEMA IF NOT EXISTS waltrail_ddl;
REVOKE ALL ON SCHEMA waltrail_ddl FROM PUBLIC;

-- The layout statements running in each session, innermost last, each with a random nonce (QA48 H2): its
-- layout_before carries the nonce, and only its own layout_after (which takes it from here) names it
-- as ended. A statement's own code (a DEFAULT or USING function, run between the two) can write messages
-- but cannot read this table nor the WAL, so it cannot end the real before: a forged after ends nothing,
-- and the real after is still compared with the real before. Unlogged: no WAL, and no publication can
-- hold it; rows live only inside the statement's transaction.
CREATE UNLOGGED TABLE IF NOT EXISTS waltrail_ddl.open_statements (
    pid int NOT NULL,
    depth int NOT NULL,
    nonce text NOT NULL
);
REVOKE ALL ON waltrail_ddl.open_statements FROM PUBLIC;

-- A table's inheritance ancestors at any depth (OIDs, as JSON; NULL for none): every message that names
-- a table carries them, so waltrail finds a change made through a parent of a mapped table.
CREATE OR REPLACE FUNCTION waltrail_ddl.ancestors(rel pg_catalog.oid) RETURNS json
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE up(oid) AS (
        SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = rel
        UNION SELECT i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.oid)
    SELECT pg_catalog.json_agg(up.oid::bigint) FROM up
$$;
REVOKE ALL ON FUNCTION waltrail_ddl.ancestors(pg_catalog.oid) FROM PUBLIC;

-- Each table rewritten, said at once: before the rewrite copies a row, so before any of the statement's
-- own code (a USING expression, a default, a constraint) can run and meddle (QA43 H1). A partitioned
-- table's partitions come one message each; waltrail makes them one item.
CREATE OR REPLACE FUNCTION waltrail_ddl.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tables json;
BEGIN
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
               'oid', c.oid::bigint, 'schema', n.nspname, 'name', c.relname,
               'root_schema', rn.nspname, 'root_name', r.relname,
               'ancestors', waltrail_ddl.ancestors(c.oid)))
      INTO tables
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_class r ON r.oid = coalesce(pg_catalog.pg_partition_root(c.oid), c.oid)
      JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
     WHERE c.oid = pg_catalog.pg_event_trigger_table_rewrite_oid();
    IF tables IS NOT NULL THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail:ddl', pg_catalog.json_build_object(
            'v', 1, 'event', 'table_rewrite', 'command', tg_tag, 'tables', tables)::text);
    END IF;
END
$$;

-- The layout of tables (those of `rels` that are tables or partitioned tables), as the layout messages
-- carry it: per table its OID, schema, name, inheritance ancestors at any depth, and per column its
-- number, name, type (with its modifier), whether it is dropped and whether rows read a default without
-- storing it (atthasmissing). Run only by the trigger functions below (as their owner).
CREATE OR REPLACE FUNCTION waltrail_ddl.layout(rels pg_catalog.oid[]) RETURNS json
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
               'oid', c.oid::bigint, 'schema', n.nspname, 'name', c.relname,
               'ancestors', waltrail_ddl.ancestors(c.oid),
               'columns', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(a.attnum, a.attname,
                               pg_catalog.format_type(a.atttypid, a.atttypmod), a.attisdropped,
                               a.atthasmissing) ORDER BY a.attnum)
                             FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0))
           ORDER BY c.oid)
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = ANY (rels) AND c.relkind IN ('r', 'p')
$$;
REVOKE ALL ON FUNCTION waltrail_ddl.layout(pg_catalog.oid[]) FROM PUBLIC;

-- Every enum label before an ALTER TYPE, to tell a renamed label from an added one after it.
CREATE OR REPLACE FUNCTION waltrail_ddl.on_alter_type_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.set_config('waltrail_ddl.labels',
        coalesce((SELECT pg_catalog.json_object_agg(e.oid::text, e.enumlabel)::text
                    FROM pg_catalog.pg_enum e), '{}'),
        true);
END
$$;

-- An enum label renamed: the tables with a column of that type, however deep (domains, arrays, ranges,
-- composite types and the row types of tables and views, QA43 H2), and the labels renamed.
CREATE OR REPLACE FUNCTION waltrail_ddl.on_alter_type() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
    before json := coalesce(nullif(
        pg_catalog.current_setting('waltrail_ddl.labels', true), ''), '{}')::json;
    renamed json;
    tables json;
BEGIN
    FOR cmd IN SELECT d.objid, d.object_identity FROM pg_catalog.pg_event_trigger_ddl_commands() d
               WHERE d.object_type = 'type'
    LOOP
        SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                   'from', before ->> e.oid::text, 'to', e.enumlabel) ORDER BY e.enumsortorder)
          INTO renamed
          FROM pg_catalog.pg_enum e
         WHERE e.enumtypid = cmd.objid
           AND (before ->> e.oid::text) IS NOT NULL
           AND (before ->> e.oid::text) <> e.enumlabel;
        CONTINUE WHEN renamed IS NULL;
        WITH RECURSIVE deps(oid) AS (
            SELECT cmd.objid
            UNION
            SELECT x.oid FROM deps d CROSS JOIN LATERAL (
                SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typelem = d.oid OR t.typbasetype = d.oid
                UNION ALL
                SELECT k.reltype FROM pg_catalog.pg_attribute a
                  JOIN pg_catalog.pg_class k ON k.oid = a.attrelid AND k.reltype <> 0
                 WHERE a.atttypid = d.oid AND a.attnum > 0 AND NOT a.attisdropped
                UNION ALL
                SELECT g.rngtypid FROM pg_catalog.pg_range g WHERE g.rngsubtype = d.oid
                UNION ALL
                SELECT g.rngmultitypid FROM pg_catalog.pg_range g WHERE g.rngsubtype = d.oid
            ) x
        ),
        used AS (
            SELECT a.attrelid, pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) AS cols
              FROM pg_catalog.pg_attribute a
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.atttypid IN (SELECT oid FROM deps)
             GROUP BY a.attrelid
        )
        SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                   'oid', c.oid::bigint, 'schema', n.nspname, 'name', c.relname,
                   'root_schema', rn.nspname, 'root_name', r.relname, 'columns', u.cols,
                   'ancestors', waltrail_ddl.ancestors(c.oid)))
          INTO tables
          FROM used u
          JOIN pg_catalog.pg_class c ON c.oid = u.attrelid AND c.relkind IN ('r', 'p')
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_class r ON r.oid = coalesce(pg_catalog.pg_partition_root(c.oid), c.oid)
          JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace;
        IF tables IS NOT NULL THEN
            PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail:ddl', pg_catalog.json_build_object(
                'v', 1, 'event', 'ddl_command_end', 'command', tg_tag, 'type', cmd.object_identity,
                'renamed', renamed, 'tables', tables)::text);
        END IF;
    END LOOP;
END
$$;

-- Every published table's columns before an ALTER TABLE (QA43 H3, H4: renames, drops, constant-default adds and
-- binary-coercible retypes change what rows read without a rewrite and without a row change). The
-- statement's target is not known yet at ddl_command_start, so this names every table a publication holds
-- (each listed table and its inheritance children, at any depth; a FOR ALL TABLES publication's tables;
-- a FOR TABLES IN SCHEMA publication's tables; a partition's columns are its root's, so partitions are
-- left out). It is a message, not a setting: the statement's own code (a DEFAULT or USING function) runs
-- before ddl_command_end and could change a setting, never a message already written (QA43 H1).
CREATE OR REPLACE FUNCTION waltrail_ddl.on_alter_table_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    published pg_catalog.oid[];
    tables json;
    -- A strong random value (not random(), whose seed the session can set).
    statement_nonce text := pg_catalog.gen_random_uuid()::text;
BEGIN
    INSERT INTO waltrail_ddl.open_statements
    SELECT pg_catalog.pg_backend_pid(), coalesce(max(o.depth), 0) + 1, statement_nonce
      FROM waltrail_ddl.open_statements o WHERE o.pid = pg_catalog.pg_backend_pid();
    published := ARRAY(
        SELECT pr.prrelid FROM pg_catalog.pg_publication_rel pr
        UNION
        SELECT c.oid FROM pg_catalog.pg_class c
         WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.puballtables)
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
           AND c.oid >= 16384);
    -- Postgres 15 and later: schemas published whole.
    IF pg_catalog.to_regclass('pg_catalog.pg_publication_namespace') IS NOT NULL THEN
        EXECUTE 'SELECT pg_catalog.array_cat($1, ARRAY(
                     SELECT c.oid FROM pg_catalog.pg_class c
                       JOIN pg_catalog.pg_publication_namespace pn ON pn.pnnspid = c.relnamespace
                      WHERE c.relkind IN (''r'', ''p'') AND NOT c.relispartition))'
           INTO published USING published;
    END IF;
    WITH RECURSIVE members(oid) AS (
        SELECT pg_catalog.unnest(published)
        UNION
        SELECT i.inhrelid FROM members m
          JOIN pg_catalog.pg_inherits i ON i.inhparent = m.oid
          JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid AND NOT k.relispartition
    )
    SELECT waltrail_ddl.layout(ARRAY(SELECT DISTINCT oid FROM members)) INTO tables;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail:ddl', pg_catalog.json_build_object(
        'v', 1, 'event', 'layout_before', 'command', tg_tag, 'nonce', statement_nonce,
        'tables', coalesce(tables, '[]'::json))::text);
END
$$;

-- The columns after an ALTER TABLE of every table it touched, and of their inheritance children (an ALTER
-- of a parent renames, retypes and drops its children's inherited columns too). A partition touched stands
-- for its root (its columns can change only through the root); partitions are left out like before,
-- except one a publication lists by itself. Written for every statement, also one that
-- touched nothing: waltrail compares each table's columns with those of every layout_before message since
-- the last layout_after, so each statement ends the ones before it.
CREATE OR REPLACE FUNCTION waltrail_ddl.on_alter_table() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    touched pg_catalog.oid[];
    tables json;
    ends text[];
BEGIN
    -- This statement's own nonce: statements it ran inside have ended before it, so it is innermost.
    WITH mine AS (
        DELETE FROM waltrail_ddl.open_statements o
         WHERE o.pid = pg_catalog.pg_backend_pid()
           AND o.depth = (SELECT max(x.depth) FROM waltrail_ddl.open_statements x
                           WHERE x.pid = pg_catalog.pg_backend_pid())
        RETURNING o.nonce)
    SELECT ARRAY(SELECT mine.nonce FROM mine) INTO ends;
    touched := ARRAY(
        SELECT DISTINCT coalesce(pg_catalog.pg_partition_root(d.objid), d.objid)
          FROM pg_catalog.pg_event_trigger_ddl_commands() d
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        UNION
        -- ALTER TYPE … RENAME/ADD/DROP/ALTER ATTRIBUTE … CASCADE changes the columns of the tables typed
        -- by that composite type (CREATE TABLE … OF type, ALTER TABLE … OF type) with no ALTER TABLE.
        -- The command names the type, or (RENAME ATTRIBUTE) the type's own relation.
        SELECT c.oid
          FROM pg_catalog.pg_event_trigger_ddl_commands() d
          JOIN pg_catalog.pg_class c ON c.reloftype = d.objid
         WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
        UNION
        SELECT c.oid
          FROM pg_catalog.pg_event_trigger_ddl_commands() d
          JOIN pg_catalog.pg_class k ON k.oid = d.objid AND k.relkind = 'c'
          JOIN pg_catalog.pg_class c ON c.reloftype = k.reltype
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass);
    WITH RECURSIVE members(oid) AS (
        SELECT pg_catalog.unnest(touched)
        UNION
        SELECT i.inhrelid FROM members m JOIN pg_catalog.pg_inherits i ON i.inhparent = m.oid
    )
    -- A partition only where a publication lists it by itself, as the layout before has it then.
    SELECT waltrail_ddl.layout(ARRAY(
               SELECT DISTINCT c.oid FROM members m JOIN pg_catalog.pg_class c ON c.oid = m.oid
                WHERE NOT c.relispartition
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr WHERE pr.prrelid = c.oid)))
      INTO tables;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail:ddl', pg_catalog.json_build_object(
        'v', 1, 'event', 'layout_after', 'command', tg_tag, 'ends', ends,
        'tables', coalesce(tables, '[]'::json))::text);
END
$$;

-- The columns after a DROP TYPE or DROP DOMAIN … CASCADE of every table that lost a column with it (the
-- columns of that type go with it, with no ALTER TABLE): written at sql_drop for every such statement that
-- dropped something, also one that dropped no column, so it ends the layout_before written at its start
-- (a DROP … IF EXISTS of nothing fires no sql_drop: on_alter_table ends it at ddl_command_end; QA47 L1).
CREATE OR REPLACE FUNCTION waltrail_ddl.on_drop_type() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    touched pg_catalog.oid[];
    tables json;
    -- This statement's nonce, left for its ddl_command_end (which takes it and ends nothing more).
    ends text[] := ARRAY(
        SELECT o.nonce FROM waltrail_ddl.open_statements o
         WHERE o.pid = pg_catalog.pg_backend_pid() ORDER BY o.depth DESC LIMIT 1);
BEGIN
    touched := ARRAY(
        SELECT DISTINCT coalesce(pg_catalog.pg_partition_root(o.objid), o.objid)
          FROM pg_catalog.pg_event_trigger_dropped_objects() o
         WHERE o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND o.objsubid > 0
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = o.objid));
    SELECT waltrail_ddl.layout(touched) INTO tables;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail:ddl', pg_catalog.json_build_object(
        'v', 1, 'event', 'layout_after', 'command', tg_tag, 'ends', ends,
        'tables', coalesce(tables, '[]'::json))::text);
END
$$;

-- The columns any other statement dropped by a cascade (QA47 M1): DROP EXTENSION (an extension's type),
-- DROP SCHEMA (a domain or type of it), DROP COLLATION, DROP FUNCTION (a generated column calling it),
-- DROP OWNED … CASCADE drop columns of other tables with no ALTER TABLE. Postgres names each dropped
-- column (schema, table, column) in the statement's dropped objects; a table dropped whole is not a column
-- change and is left out. Written only when a column of a table that still exists went: the statements
-- the layout triggers cover (ALTER TABLE, ALTER TYPE, DROP TYPE, DROP DOMAIN) are left to them.
CREATE OR REPLACE FUNCTION waltrail_ddl.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tables json;
BEGIN
    IF tg_tag IN ('ALTER TABLE', 'ALTER TYPE', 'DROP TYPE', 'DROP DOMAIN', 'ALTER VIEW',
                  'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE') THEN
        RETURN;
    END IF;
    SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
               'oid', c.oid::bigint, 'schema', n.nspname, 'name', c.relname,
               'ancestors', waltrail_ddl.ancestors(c.oid),
               'dropped', d.names)
           ORDER BY c.oid)
      INTO tables
      FROM (SELECT o.objid, pg_catalog.array_agg(DISTINCT o.address_names[3]) AS names
              FROM pg_catalog.pg_event_trigger_dropped_objects() o
             WHERE o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND o.objsubid > 0
             GROUP BY o.objid) d
      JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relkind IN ('r', 'p')
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
    IF tables IS NOT NULL THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail:ddl', pg_catalog.json_build_object(
            'v', 1, 'event', 'layout_dropped', 'command', tg_tag, 'tables', tables)::text);
    END IF;
END
$$;

DROP EVENT TRIGGER IF EXISTS waltrail_ddl_rewrite;
CREATE EVENT TRIGGER waltrail_ddl_rewrite ON table_rewrite
    EXECUTE FUNCTION waltrail_ddl.on_rewrite();
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_alter_type_start;
CREATE EVENT TRIGGER waltrail_ddl_alter_type_start ON ddl_command_start WHEN TAG IN ('ALTER TYPE')
    EXECUTE FUNCTION waltrail_ddl.on_alter_type_start();
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_alter_type;
CREATE EVENT TRIGGER waltrail_ddl_alter_type ON ddl_command_end WHEN TAG IN ('ALTER TYPE')
    EXECUTE FUNCTION waltrail_ddl.on_alter_type();
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_layout_start;
CREATE EVENT TRIGGER waltrail_ddl_layout_start ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE', 'ALTER TYPE', 'DROP TYPE', 'DROP DOMAIN', 'ALTER VIEW',
                 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION waltrail_ddl.on_alter_table_start();
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_layout;
-- DROP TYPE and DROP DOMAIN too: their columns after are written at sql_drop (on_drop_type), but a DROP …
-- IF EXISTS of nothing fires no sql_drop, and its layout_before would stay (QA47 L1). At its end this
-- writes a layout_after of no table (Postgres lists no command of a DROP), which ends whatever is left;
-- after a sql_drop's layout_after, nothing is.
CREATE EVENT TRIGGER waltrail_ddl_layout ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER TYPE', 'DROP TYPE', 'DROP DOMAIN', 'ALTER VIEW',
                 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION waltrail_ddl.on_alter_table();
-- Also in sessions with session_replication_role = replica (QA44 M1).
ALTER EVENT TRIGGER waltrail_ddl_rewrite ENABLE ALWAYS;
ALTER EVENT TRIGGER waltrail_ddl_alter_type_start ENABLE ALWAYS;
ALTER EVENT TRIGGER waltrail_ddl_alter_type ENABLE ALWAYS;
ALTER EVENT TRIGGER waltrail_ddl_layout_start ENABLE ALWAYS;
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_drop_type;
CREATE EVENT TRIGGER waltrail_ddl_drop_type ON sql_drop WHEN TAG IN ('DROP TYPE', 'DROP DOMAIN')
    EXECUTE FUNCTION waltrail_ddl.on_drop_type();
ALTER EVENT TRIGGER waltrail_ddl_layout ENABLE ALWAYS;
ALTER EVENT TRIGGER waltrail_ddl_drop_type ENABLE ALWAYS;
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_drop;
CREATE EVENT TRIGGER waltrail_ddl_drop ON sql_drop EXECUTE FUNCTION waltrail_ddl.on_drop();
ALTER EVENT TRIGGER waltrail_ddl_drop ENABLE ALWAYS;
-- An earlier version's trigger, which carried the rewritten tables in a setting the statement could change.
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_rewrite_end;
DROP FUNCTION IF EXISTS waltrail_ddl.on_rewrite_end();

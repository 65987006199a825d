-- Optional, run once per audited database as a superuser (event triggers need one): records in the trail
-- the DDL that changes audited rows' values without a row change, which the WAL stream does not show:
--
--   * ALTER TABLE … ALTER COLUMN … TYPE … USING … (and any other ALTER that rewrites the table): every row
--     is rewritten, perhaps with other values, and no row change is sent;
--   * ALTER TYPE … RENAME VALUE (and any ALTER TYPE of a type an audited column uses): every stored label
--     reads as the new one from then on.
--
-- Each writes a transactional logical-decoding message (prefix 'waltrail:ddl') in the DDL's own
-- transaction: waltrail turns it into an AUDIT_ACTION_ALTERED item for each mapped table it names, at the
-- DDL's place in the trail, attributed like the transaction's changes. Nothing is stored in any table.
-- If you configured another attribution.message_prefix, replace 'waltrail:ddl' below by '<prefix>:ddl'.
--
-- The functions run as their owner (SECURITY DEFINER), so a migration run by the platform's role needs no
-- right to write logical-decoding messages. Dropping the event triggers turns this off again:
--   DROP EVENT TRIGGER waltrail_ddl_rewrite; DROP EVENT TRIGGER waltrail_ddl_alter_type;
CREATE SCHEMA IF NOT EXISTS waltrail;

-- One relation as the messages name it: OID, schema, name, the top of its partition tree, and columns.
CREATE OR REPLACE FUNCTION waltrail.ddl_table(rel oid, cols text[]) RETURNS json
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT json_build_object(
        'oid', c.oid::bigint, 'schema', n.nspname, 'name', c.relname,
        'root_schema', rn.nspname, 'root_name', r.relname, 'columns', cols)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid)
    JOIN pg_namespace rn ON rn.oid = r.relnamespace
    WHERE c.oid = rel
$$;

CREATE OR REPLACE FUNCTION waltrail.ddl_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'waltrail:ddl', json_build_object(
        'v', 1,
        'event', 'table_rewrite',
        'command', tg_tag,
        'tables', json_build_array(waltrail.ddl_table(pg_event_trigger_table_rewrite_oid(), NULL))
    )::text);
END
$$;

CREATE OR REPLACE FUNCTION waltrail.ddl_alter_type() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    cmd record;
    tables json;
BEGIN
    FOR cmd IN SELECT objid, object_identity FROM pg_event_trigger_ddl_commands() WHERE object_type = 'type'
    LOOP
        -- The tables with a column of that type, an array of it, or a domain over it.
        SELECT json_agg(waltrail.ddl_table(u.attrelid, u.cols)) INTO tables
        FROM (
            SELECT a.attrelid, array_agg(a.attname::text ORDER BY a.attnum) AS cols
            FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attnum > 0 AND NOT a.attisdropped
              AND (t.oid = cmd.objid OR t.typelem = cmd.objid OR t.typbasetype = cmd.objid)
            GROUP BY a.attrelid
        ) u
        JOIN pg_class c ON c.oid = u.attrelid
        WHERE c.relkind IN ('r', 'p');
        IF tables IS NOT NULL THEN
            PERFORM pg_logical_emit_message(true, 'waltrail:ddl', json_build_object(
                'v', 1,
                'event', 'ddl_command_end',
                'command', tg_tag,
                'type', cmd.object_identity,
                'labels', (SELECT json_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum
                           WHERE enumtypid = cmd.objid),
                'tables', tables
            )::text);
        END IF;
    END LOOP;
END
$$;

DROP EVENT TRIGGER IF EXISTS waltrail_ddl_rewrite;
CREATE EVENT TRIGGER waltrail_ddl_rewrite ON table_rewrite
    EXECUTE FUNCTION waltrail.ddl_rewrite();
DROP EVENT TRIGGER IF EXISTS waltrail_ddl_alter_type;
CREATE EVENT TRIGGER waltrail_ddl_alter_type ON ddl_command_end WHEN TAG IN ('ALTER TYPE')
    EXECUTE FUNCTION waltrail.ddl_alter_type();

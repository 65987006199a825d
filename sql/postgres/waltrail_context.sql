-- Optional helper for the platform: one call per request (inside its transaction) tells waltrail who is
-- acting and how. It writes a transactional logical-decoding message with prefix 'waltrail'; nothing is
-- stored in any table, and nothing is written at all unless the transaction commits.
--
--   SELECT waltrail.set_context('{"actor_id": "acct_42", "source": "API", "request_id": "req-9"}');
--
-- Fields (all optional strings): actor_id, actor_type (ACCOUNT, SERVICE_KEY, AGENT, SYSTEM), actor_display,
-- actor_email, on_behalf_of, on_behalf_of_display, source (API, DASHBOARD, CLI, SDK, SYSTEM), auth_method,
-- key_id, session_id, request_id, run_id, client_ip, user_agent.
-- If you configured another attribution.message_prefix, use pg_logical_emit_message(true, '<prefix>', ...)
-- directly, or edit the prefix below.
CREATE SCHEMA IF NOT EXISTS waltrail;

CREATE OR REPLACE FUNCTION waltrail.set_context(ctx jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'waltrail', ctx::text);
END
$$;

COMMENT ON FUNCTION waltrail.set_context(jsonb) IS
    'Tells waltrail who acts in this transaction (a transactional logical-decoding message, prefix waltrail)';

-- Signed context (attribution.require_signed_context = true): the same call, sealed with a secret the
-- platform shares with waltrail (attribution.context_secret / WALTRAIL_CONTEXT_SECRET). Needs pgcrypto.
-- A seal proves only that whoever made it could use the secret, so two things must hold (QA34 H1):
--   * Only the function's owner can read the secret. It is kept in waltrail.context_key, a table no other
--     role may read. Never in a setting (ALTER DATABASE/ROLE … SET, postgresql.conf): every role can read
--     those (SHOW, pg_db_role_setting), and `waltrail check` / `waltrail run` refuse a secret found there.
--   * Only the platform's role may call the function: it seals whatever it is given. EXECUTE is revoked
--     from PUBLIC below; grant it to the platform's role alone, never to roles that run other people's SQL.
-- The seal covers the transaction's id and the context: {"ctx": "<json>", "xid": "<txid_current()>",
-- "sig": "<hex HMAC-SHA256(secret, xid || E'\n' || ctx)>"}. waltrail checks it, and that the message is in
-- that very transaction, and records an unsigned, badly signed or replayed context as rejected instead of
-- trusting it. (A seal without "xid", HMAC over the context alone, is still taken, but a copy of it can be
-- replayed in any later transaction by whoever saw it.)
--
--   -- as the owner of this schema, once (and again to rotate, together with waltrail's context_secret):
--   INSERT INTO waltrail.context_key (secret) VALUES ('...')
--     ON CONFLICT (one) DO UPDATE SET secret = excluded.secret;
--   GRANT EXECUTE ON FUNCTION waltrail.set_signed_context(jsonb) TO platform_app;
--
--   SELECT waltrail.set_signed_context('{"actor_id": "acct_42", "source": "API"}');
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Whoever owns schema waltrail or its key table reads the secret: a role that made them before this file
-- ran (CREATE ... IF NOT EXISTS keeps theirs) must not stay their owner.
DO $check$
BEGIN
    IF (SELECT nspowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
          FROM pg_catalog.pg_namespace WHERE nspname = 'waltrail') THEN
        RAISE EXCEPTION 'schema waltrail is owned by another role: drop it (or ALTER SCHEMA waltrail OWNER TO %) and run this file again', current_user;
    END IF;
END
$check$;

CREATE TABLE IF NOT EXISTS waltrail.context_key (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    secret text NOT NULL
);
DO $check$
BEGIN
    IF (SELECT relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
          FROM pg_catalog.pg_class WHERE oid = 'waltrail.context_key'::regclass) THEN
        RAISE EXCEPTION 'waltrail.context_key is owned by another role: drop it and run this file again';
    END IF;
END
$check$;
REVOKE ALL ON waltrail.context_key FROM PUBLIC;

-- Made with the schema pgcrypto is in written into the body, and run with a search path of pg_catalog
-- alone (pg_temp last, where functions are never looked up): a function a role with CREATE on some
-- schema of the path could add, matching the arguments better than the built-in one, would run as this
-- function's owner and see the secret (QA35 H1: json_build_object and hmac overloads in public). Every
-- argument is typed, so pgcrypto's own hmac(text, text, text) is the exact match in its schema.
DO $make$
DECLARE
    crypto text := (SELECT n.nspname FROM pg_catalog.pg_extension e
                    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto');
BEGIN
    EXECUTE pg_catalog.format($fn$
CREATE OR REPLACE FUNCTION waltrail.set_signed_context(ctx jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    body text := ctx::text;
    -- Binds the seal to this transaction: a copy of the message replayed in another one is refused.
    xid text := pg_catalog.txid_current()::text;
    key text;
BEGIN
    SELECT k.secret INTO key FROM waltrail.context_key k;
    IF key IS NULL THEN
        RAISE EXCEPTION 'waltrail.context_key holds no secret: INSERT INTO waltrail.context_key (secret) VALUES (...) as the owner of waltrail.set_signed_context';
    END IF;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'waltrail'::text, pg_catalog.json_build_object(
        'ctx'::text, body,
        'xid'::text, xid,
        'sig'::text, pg_catalog.encode(%I.hmac((xid || E'\n' || body)::text, key::text, 'sha256'::text), 'hex'::text)
    )::text);
END
$body$$fn$, crypto);
END
$make$;
REVOKE EXECUTE ON FUNCTION waltrail.set_signed_context(jsonb) FROM PUBLIC;

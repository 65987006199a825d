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

CREATE TABLE IF NOT EXISTS waltrail.context_key (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    secret text NOT NULL
);
REVOKE ALL ON waltrail.context_key FROM PUBLIC;

CREATE OR REPLACE FUNCTION waltrail.set_signed_context(ctx jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    body text := ctx::text;
    -- Binds the seal to this transaction: a copy of the message replayed in another one is refused.
    xid text := txid_current()::text;
    key text;
BEGIN
    SELECT secret INTO key FROM waltrail.context_key;
    IF key IS NULL THEN
        RAISE EXCEPTION 'waltrail.context_key holds no secret: INSERT INTO waltrail.context_key (secret) VALUES (...) as the owner of waltrail.set_signed_context';
    END IF;
    PERFORM pg_logical_emit_message(true, 'waltrail', json_build_object(
        'ctx', body,
        'xid', xid,
        'sig', encode(hmac(xid || E'\n' || body, key, 'sha256'), 'hex')
    )::text);
END
$$;
REVOKE EXECUTE ON FUNCTION waltrail.set_signed_context(jsonb) FROM PUBLIC;

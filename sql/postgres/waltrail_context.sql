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
-- Keep the secret where application roles cannot read it: here it is read from a setting owned by the
-- function's owner (ALTER DATABASE platform SET waltrail.context_secret = '...'; or a vault of your own),
-- and the function runs as its owner (SECURITY DEFINER). waltrail checks HMAC-SHA256(secret, ctx text) and
-- records an unsigned or badly signed context as rejected instead of trusting it.
--
--   SELECT waltrail.set_signed_context('{"actor_id": "acct_42", "source": "API"}');
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE OR REPLACE FUNCTION waltrail.set_signed_context(ctx jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    body text := ctx::text;
BEGIN
    PERFORM pg_logical_emit_message(true, 'waltrail', json_build_object(
        'ctx', body,
        'sig', encode(hmac(body, current_setting('waltrail.context_secret'), 'sha256'), 'hex')
    )::text);
END
$$;

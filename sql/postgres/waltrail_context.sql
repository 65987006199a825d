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

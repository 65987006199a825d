-- waltrail demo: admin changes against sql/demo/platform.sql, one transaction each.
-- scripts/demo applies this once the replication slot is active; every changed row of a mapped table
-- becomes one audit item. Attribution takes both paths:
--   * from the platform's own tables, with no change to its code: the actor columns of gateways
--     (created_by/updated_by) and the session column of projects and api_keys (last_session_id → sessions
--     → accounts);
--   * from a context message (waltrail.set_context / pg_logical_emit_message): an agent acting for Bob.

-- 1. Alice creates gateway "arcade" (actor column created_by).
BEGIN;
INSERT INTO gateways (id, org_id, project_id, name, config, created_by, updated_by) VALUES
    ('gw_arcade', 'org_acme', 'proj_web', 'arcade',
     '{"upstream": "https://arcade.internal:8443", "rate_limit": {"rps": 50, "burst": 100}, "routes": ["/v1/chat", "/v1/embeddings"]}',
     'acct_alice', 'acct_alice');
COMMIT;

-- 2. Alice, signed in to the dashboard, creates API key "prod-key-1" (session column → sessions → accounts).
BEGIN;
INSERT INTO api_keys (id, org_id, project_id, name, key_hash, owner_account_id, last_session_id) VALUES
    ('7d0c2a1e-5b8f-4c3e-9a61-2f4d8e9b0c11', 'org_acme', 'proj_web', 'prod-key-1',
     encode(sha256('sk-demo-first-secret'::bytea), 'hex'), 'acct_alice', 'sess_alice_1');
COMMIT;

-- 3. A deploy agent acting for Bob through the API rotates the key (context message; the hash is redacted).
BEGIN;
SELECT waltrail.set_context('{"actor_id":"agent_deploy","actor_type":"AGENT","actor_display":"deploy-bot","on_behalf_of":"acct_bob","source":"API","auth_method":"API_KEY","request_id":"req-123","run_id":"run-7"}');
UPDATE api_keys
   SET key_hash = encode(sha256('sk-demo-second-secret'::bytea), 'hex'), updated_at = now()
 WHERE name = 'prod-key-1';
COMMIT;

-- 4. Alice renames the web project from the dashboard (session column).
BEGIN;
UPDATE projects SET name = 'Web Storefront', last_session_id = 'sess_alice_1', updated_at = now() WHERE id = 'proj_web';
COMMIT;

-- 5. Alice disables the key: derived action DISABLED.
BEGIN;
UPDATE api_keys SET enabled = false, last_session_id = 'sess_alice_1', updated_at = now() WHERE name = 'prod-key-1';
COMMIT;

-- 6. The deploy agent scales the web frontend and ships a new image (context message).
BEGIN;
SELECT waltrail.set_context('{"actor_id":"agent_deploy","actor_type":"AGENT","actor_display":"deploy-bot","on_behalf_of":"acct_bob","source":"API","auth_method":"API_KEY","request_id":"req-124","run_id":"run-7"}');
UPDATE deployments
   SET replicas = 4, image = 'registry.example.com/acme/web:1.5.0', updated_at = now()
 WHERE id = 'dep_web';
COMMIT;

-- 7. Bob soft-deletes the ML project through the API with his session: action DELETED.
BEGIN;
UPDATE projects SET deleted_at = now(), last_session_id = 'sess_bob_1', updated_at = now() WHERE id = 'proj_ml';
COMMIT;

-- 8. Bob deletes the legacy gateway from the CLI (context message without an actor type: an account).
BEGIN;
SELECT waltrail.set_context('{"actor_id":"acct_bob","source":"CLI","auth_method":"API_KEY","client_ip":"198.51.100.23"}');
DELETE FROM gateways WHERE id = 'gw_legacy';
COMMIT;

-- waltrail demo: admin changes against sql/demo/platform.sql, one transaction each.
-- scripts/demo applies this once the replication slot is active; every changed row of a mapped table
-- should become one audit item (accounts and sessions are not mapped).

-- 1. Alice creates gateway "arcade".
BEGIN;
INSERT INTO gateways (id, org_id, project_id, name, config) VALUES
    ('gw_arcade', 'org_acme', 'proj_web', 'arcade',
     '{"upstream": "https://arcade.internal:8443", "rate_limit": {"rps": 50, "burst": 100}, "routes": ["/v1/chat", "/v1/embeddings"]}');
COMMIT;

-- 2. Alice creates API key "prod-key-1".
BEGIN;
INSERT INTO api_keys (id, org_id, project_id, name, key_hash, owner_account_id) VALUES
    ('7d0c2a1e-5b8f-4c3e-9a61-2f4d8e9b0c11', 'org_acme', 'proj_web', 'prod-key-1',
     encode(sha256('sk-demo-first-secret'::bytea), 'hex'), 'acct_alice');
COMMIT;

-- 3. The key is rotated (new hash): derived action ROTATED, the hash itself is redacted.
BEGIN;
UPDATE api_keys
   SET key_hash = encode(sha256('sk-demo-second-secret'::bytea), 'hex'), updated_at = now()
 WHERE name = 'prod-key-1';
COMMIT;

-- 4. The web project is renamed.
BEGIN;
UPDATE projects SET name = 'Web Storefront', updated_at = now() WHERE id = 'proj_web';
COMMIT;

-- 5. The key is disabled: derived action DISABLED.
BEGIN;
UPDATE api_keys SET enabled = false, updated_at = now() WHERE name = 'prod-key-1';
COMMIT;

-- 6. A deploy bot, acting for Bob through the API, scales the web frontend and ships a new image.
--    The logical-decoding message carries who did it (attribution reads it later; today it is ignored).
BEGIN;
SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"acct_bob","actor_type":"AGENT","actor_display":"deploy-bot","on_behalf_of":"acct_bob","source":"API","auth_method":"API_KEY","request_id":"req-123"}');
UPDATE deployments
   SET replicas = 4, image = 'registry.example.com/acme/web:1.5.0', updated_at = now()
 WHERE id = 'dep_web';
COMMIT;

-- 7. The ML project is soft-deleted: action DELETED.
BEGIN;
UPDATE projects SET deleted_at = now(), updated_at = now() WHERE id = 'proj_ml';
COMMIT;

-- 8. The legacy gateway is deleted for real.
BEGIN;
DELETE FROM gateways WHERE id = 'gw_legacy';
COMMIT;

-- waltrail demo: a small "AI-agent platform" schema with a little seed data.
--
-- Throwaway: it drops and re-creates its tables, so load it only into a demo database
-- (scripts/demo creates `platform` for it; docker-compose.yml runs it at first start of the postgres service).
-- Needs PostgreSQL 13 or later (gen_random_uuid() is built in from 13).

DROP TABLE IF EXISTS sessions, deployments, gateways, api_keys, projects, accounts, organizations CASCADE;

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id            text PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES organizations (id),
    name         text NOT NULL,
    description  text,
    deleted_at   timestamptz NULL,          -- soft delete
    last_session_id text,                   -- which login session last changed it (attribution)
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id            text NOT NULL REFERENCES organizations (id),
    project_id        text REFERENCES projects (id),
    name              text NOT NULL,
    key_hash          text NOT NULL,          -- secret-ish: waltrail redacts it
    enabled           boolean NOT NULL DEFAULT true,
    owner_account_id  text REFERENCES accounts (id),
    last_session_id   text,                   -- which login session last changed it (attribution)
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateways (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES organizations (id),
    project_id  text REFERENCES projects (id),
    name        text NOT NULL,
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by  text,                         -- actor columns (attribution)
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deployments (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES organizations (id),
    project_id  text REFERENCES projects (id),
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'PENDING',
    replicas    int NOT NULL DEFAULT 1,
    image       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who is logged in where; not audited itself, read later to attribute changes.
CREATE TABLE sessions (
    id           text PRIMARY KEY,
    account_id   text REFERENCES accounts (id),
    source       text NOT NULL,               -- e.g. DASHBOARD, API, CLI
    auth_method  text NOT NULL,               -- e.g. PASSWORD, SSO, API_KEY
    client_ip    inet,
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Seed data.
INSERT INTO organizations (id, name) VALUES
    ('org_acme', 'Acme Corp');

INSERT INTO accounts (id, email, display_name) VALUES
    ('acct_alice', 'alice@example.com', 'Alice Admin'),
    ('acct_bob',   'bob@example.com',   'Bob Builder');

INSERT INTO projects (id, org_id, name, description) VALUES
    ('proj_web', 'org_acme', 'Web', 'Customer-facing web app'),
    ('proj_ml',  'org_acme', 'ML',  'Model training and evaluation');

-- A gateway and a deployment that sql/demo/changes.sql deletes and scales.
INSERT INTO gateways (id, org_id, project_id, name, config) VALUES
    ('gw_legacy', 'org_acme', 'proj_web', 'legacy-edge', '{"upstream": "http://10.0.0.7:8080", "timeout_ms": 30000}');

INSERT INTO deployments (id, org_id, project_id, name, status, replicas, image) VALUES
    ('dep_web', 'org_acme', 'proj_web', 'web-frontend', 'RUNNING', 2, 'registry.example.com/acme/web:1.4.0');

INSERT INTO sessions (id, account_id, source, auth_method, client_ip, user_agent) VALUES
    ('sess_alice_1', 'acct_alice', 'DASHBOARD', 'SSO', '203.0.113.10', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0'),
    ('sess_bob_1',   'acct_bob',   'API',     'API_KEY', '198.51.100.23', 'deploy-bot/2.3');

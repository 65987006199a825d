//! The dashboard in a real (headless Chromium) browser against the real binary: `waltrail run` captures a
//! small platform's changes from Postgres into ClickHouse and serves the API and the dashboard; the
//! browser side lives in tests/browser/dashboard.test.mjs (Node + playwright-core), which this test runs.
//!
//! Needs node, /usr/bin/chromium and tests/browser/node_modules; `scripts/test` installs them.

mod harness;

use harness::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORG: &str = "org_acme";
const ADMIN_KEY: &str = "wt_test_admin_7f3b1c9e2d4a";
const MEMBER_KEY: &str = "wt_test_member_5a8e0d2c6b1f";
/// Another organization, whose admin sees what concerns it too: a webhook moved in, a platform-wide item.
const OTHER_ORG: &str = "org_globex";
const OTHER_ADMIN_KEY: &str = "wt_test_globex_admin_3c9d1e7a";
/// The platform's context secret: a context message with another signature is rejected (not used).
const CONTEXT_SECRET: &str = "test-context-secret-0123456789abcdef";
/// The Ed25519 seed waltrail signs checkpoints with (64 hex digits, as `waltrail keygen` writes one); with
/// `checkpoint_every_items = 1` every item is covered by a checkpoint, so the dashboard can say "Verified".
const SIGNING_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// Routine updates made first, so that the list needs several pages (50 items each).
const BULK_UPDATES: usize = 110;

const DDL: &str = r#"
CREATE TABLE accounts (id text PRIMARY KEY, email text NOT NULL, display_name text NOT NULL);
CREATE TABLE agents (id text PRIMARY KEY, name text NOT NULL, owner_id text);
CREATE TABLE sessions (id text PRIMARY KEY, account_id text, agent_id text, source text, auth_method text,
                       client_ip inet, user_agent text);
CREATE TABLE projects (id text PRIMARY KEY, org_id text NOT NULL, name text NOT NULL, session_id text);
CREATE TABLE settings (id text PRIMARY KEY, org_id text NOT NULL, value text, session_id text);
CREATE TABLE gateways (id text PRIMARY KEY, org_id text NOT NULL, project_id text, name text NOT NULL,
                       config jsonb NOT NULL DEFAULT '{}', session_id text);
CREATE TABLE api_keys (id text PRIMARY KEY, org_id text NOT NULL, project_id text, name text NOT NULL,
                       key_hash text NOT NULL, enabled boolean NOT NULL DEFAULT true, session_id text);
CREATE TABLE deployments (id text PRIMARY KEY, org_id text NOT NULL, project_id text, name text NOT NULL,
                          replicas int NOT NULL DEFAULT 1, image text NOT NULL, session_id text);
-- FULL: an update sends the old row, so a change of organization is seen as a move.
CREATE TABLE webhooks (id text PRIMARY KEY, org_id text NOT NULL, project_id text, name text NOT NULL,
                       url text NOT NULL, session_id text);
ALTER TABLE webhooks REPLICA IDENTITY FULL;
INSERT INTO accounts VALUES ('acct_alice', 'alice@example.com', 'Alice Admin'),
                            ('acct_bob', 'bob@example.com', 'Bob Builder'),
                            ('acct_carol', 'carol@example.com', 'Carol Ops');
INSERT INTO agents VALUES ('agent_deploy', 'deploy-bot', 'acct_bob');
INSERT INTO sessions VALUES
  ('sess_alice', 'acct_alice', NULL, 'dashboard', 'SSO', '203.0.113.10', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0'),
  ('sess_bob', 'acct_bob', NULL, 'api', 'API_KEY', '198.51.100.23', 'curl/8.5.0'),
  ('sess_carol', 'acct_carol', NULL, 'cli', 'PASSWORD', '192.0.2.77', 'waltrail-cli/1.2'),
  ('sess_agent', 'acct_bob', 'agent_deploy', 'sdk', 'API_KEY', '10.9.9.9', 'agent-sdk/1.0');
"#;

/// Attribution and table mappings, followed by the API section (keys added per run).
const TABLES: &str = r#"
[attribution.accounts]
table = "accounts"
email_column = "email"
display_column = "display_name"

[attribution.sessions]
table = "sessions"
account_column = "account_id"
agent_column = "agent_id"
source_column = "source"
auth_method_column = "auth_method"
client_ip_column = "client_ip"
user_agent_column = "user_agent"

[attribution.agents]
table = "agents"
name_column = "name"
owner_column = "owner_id"

[[tables]]
table = "projects"
resource_type = "RESOURCE_TYPE_PROJECT"
display_column = "name"
organization_column = "org_id"
project_column = "id"
ignore_columns = ["session_id"]
[tables.actor]
session = "session_id"

[[tables]]
table = "settings"
resource_type = "RESOURCE_TYPE_SETTING"
display_column = "id"
organization_column = "org_id"
ignore_columns = ["session_id"]
[tables.actor]
session = "session_id"

[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["session_id"]
[tables.actor]
session = "session_id"

[[tables]]
table = "api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["session_id"]
redact_columns = ["key_hash"]
[tables.actor]
session = "session_id"
[[tables.derived_actions]]
action = "AUDIT_ACTION_ROTATED"
changed = ["key_hash"]
[[tables.derived_actions]]
action = "AUDIT_ACTION_DISABLED"
column = "enabled"
from = true
to = false

[[tables]]
table = "deployments"
resource_type = "RESOURCE_TYPE_DEPLOYMENT"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["session_id"]
[tables.actor]
session = "session_id"

[[tables]]
table = "webhooks"
resource_type = "RESOURCE_TYPE_WEBHOOK"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["session_id"]
[tables.actor]
session = "session_id"
"#;

/// The changes the browser test looks for. The bulk updates come first so that the interesting items are
/// the newest (first page).
fn changes() -> Vec<String> {
    let mut sql = vec![
        "INSERT INTO projects VALUES ('proj_web', 'org_acme', 'Web', 'sess_alice'), \
         ('proj_ml', 'org_acme', 'ML', 'sess_alice')"
            .to_owned(),
        "INSERT INTO deployments VALUES ('dep_pool', 'org_acme', 'proj_ml', 'worker-pool', 1, \
         'registry.example.com/acme/worker:1.0.0', 'sess_carol')"
            .to_owned(),
    ];
    for i in 0..BULK_UPDATES {
        sql.push(format!(
            "UPDATE deployments SET replicas = {}, session_id = 'sess_carol' WHERE id = 'dep_pool'",
            i + 2
        ));
    }
    sql.extend(
        [
            // An org-level item (no project): admins see it, members do not.
            "INSERT INTO settings VALUES ('sso_required', 'org_acme', 'true', 'sess_alice')",
            // A gateway with a JSON config, then an update of that config by an agent acting for bob.
            r#"INSERT INTO gateways VALUES ('gw_arcade', 'org_acme', 'proj_web', 'arcade',
               '{"upstream": "https://arcade.internal:8443", "timeout_ms": 30000,
                 "rate_limit": {"rps": 50, "burst": 100}, "routes": ["/v1/chat", "/v1/embeddings"]}', 'sess_alice')"#,
            r#"UPDATE gateways SET config = '{"upstream": "https://arcade.internal:8443", "timeout_ms": 30000,
                 "rate_limit": {"rps": 80, "burst": 100}, "routes": ["/v1/chat", "/v1/embeddings", "/v1/tools"]}',
               session_id = 'sess_agent' WHERE id = 'gw_arcade'"#,
            // A gateway whose name is markup (must show as text), then deleted by bob (his context message:
            // the row's session is whoever wrote it last, which never names a deleter by itself).
            r#"INSERT INTO gateways VALUES ('gw_legacy', 'org_acme', 'proj_web', '<img src=x onerror="window.__xss=1">legacy-edge', '{}', 'sess_bob')"#,
            r#"BEGIN;
               SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"acct_bob","source":"DASHBOARD"}');
               DELETE FROM gateways WHERE id = 'gw_legacy';
               COMMIT"#,
            // An API key created by bob through the API, then rotated with a context message.
            "INSERT INTO api_keys VALUES ('key_prod1', 'org_acme', 'proj_ml', 'prod-key-1', 'hash-one', true, 'sess_bob')",
            r#"BEGIN;
               SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"acct_bob","source":"API","auth_method":"API_KEY","key_id":"key_ci","request_id":"req-rotate-1","run_id":"run-42","client_ip":"198.51.100.23","user_agent":"curl/8.5.0"}');
               UPDATE api_keys SET key_hash = 'hash-two' WHERE id = 'key_prod1';
               COMMIT"#,
            // One transaction, three deployments (carol, CLI).
            "BEGIN;
             INSERT INTO deployments VALUES ('dep_a', 'org_acme', 'proj_ml', 'trainer-a', 1, 'registry.example.com/acme/trainer:2.0', 'sess_carol');
             INSERT INTO deployments VALUES ('dep_b', 'org_acme', 'proj_ml', 'trainer-b', 1, 'registry.example.com/acme/trainer:2.0', 'sess_carol');
             INSERT INTO deployments VALUES ('dep_c', 'org_acme', 'proj_ml', 'trainer-c', 1, 'registry.example.com/acme/trainer:2.0', 'sess_carol');
             COMMIT",
            // The integrity of the trail. A change nobody can account for: direct SQL, with no context
            // message and no session on the row.
            "UPDATE settings SET value = 'false', session_id = NULL WHERE id = 'sso_required'",
            // A webhook alice moves to another organization: recorded in both, for each one's admins.
            "INSERT INTO webhooks VALUES ('hook_ci', 'org_acme', 'proj_web', 'ci-notify', 'https://ci.example.com/hook', 'sess_alice')",
            "UPDATE webhooks SET org_id = 'org_globex', project_id = 'proj_globex' WHERE id = 'hook_ci'",
            // The whole table emptied (every organization's webhooks), by nobody the trail knows.
            "TRUNCATE webhooks",
            // A forged audit event: someone wrote the message waltrail seals its own events with.
            r#"SELECT pg_logical_emit_message(true, 'waltrail:event', '{"action":"AUDIT_ACTION_DELETED","resource_type":"RESOURCE_TYPE_PROJECT","organization_id":"org_acme","actor":{"actor_id":"alice"}}')"#,
            // A context message whose signature does not hold: not used; the row's session names carol.
            r#"BEGIN;
               SELECT pg_logical_emit_message(true, 'waltrail', '{"ctx":"{\"actor_id\":\"acct_alice\",\"source\":\"API\"}","sig":"0000000000000000"}');
               INSERT INTO settings VALUES ('ip_allowlist', 'org_acme', '203.0.113.0/24', 'sess_carol');
               COMMIT"#,
        ]
        .map(str::to_owned),
    );
    sql
}

/// Items the changes above make, stored: 2 projects, 1 + BULK deployment rows, 1 setting, 2 arcade,
/// 2 legacy, 2 keys, 3 deployments; then 1 unaccounted setting, 1 webhook created, its move (2: one in
/// each organization), 1 TRUNCATE, 1 rejected event, 1 setting with a rejected context.
fn expected_items() -> u64 {
    (2 + 1 + BULK_UPDATES + 1 + 2 + 2 + 2 + 3 + 1 + 1 + 2 + 1 + 1 + 1) as u64
}

/// What the other organization's admin sees: the move into it and the platform-wide TRUNCATE.
const OTHER_ADMIN_ITEMS: u64 = 2;

/// What this organization's admin sees: everything but the other organization's side of the move.
fn expected_admin_items() -> u64 {
    expected_items() - 1
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("WALTRAIL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fail (not skip) when the browser tooling is missing, saying how to get it.
fn require_browser_tools() {
    const HOW: &str = "run scripts/test (it installs chromium, nodejs, npm and runs `npm ci --prefix tests/browser`), \
                       or by hand: apt-get install -y chromium nodejs npm && npm ci --prefix tests/browser";
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        node_ok,
        "the dashboard browser test needs `node` on PATH; {HOW}"
    );
    assert!(
        chromium_path().exists(),
        "the dashboard browser test needs Chromium at {} (or set WALTRAIL_CHROMIUM); {HOW}",
        chromium_path().display()
    );
    assert!(
        repo()
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "the dashboard browser test needs tests/browser/node_modules (playwright-core); {HOW}"
    );
}

/// The waltrail process; killed when dropped so a failing assertion does not leave it running.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn sha256_hex(db: &tokio_postgres::Client, key: &str) -> String {
    db.query_one(
        "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')",
        &[&key],
    )
    .await
    .expect("hash a key in Postgres")
    .get(0)
}

/// Wait until the server answers /healthz.
async fn wait_http(server: &mut Server, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "waltrail exited ({status}) before serving HTTP; log:\n{}",
                server.log_text()
            );
        }
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
            let text = String::from_utf8_lossy(&buf);
            if text
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("HTTP/") && l.contains(" 200"))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "waltrail did not serve /healthz on port {port} within 60 s; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checkpoints are stored just after the items they cover: wait until every chain's newest item has its
/// checkpoint, so that what the dashboard says is verified does not move while the browser test reads it.
async fn wait_checkpoints(env: &TestEnv) {
    const BEHIND: &str = "SELECT count() FROM \
         (SELECT organization_id, max(chain_seq) AS seq FROM audit_items WHERE chain_seq > 0 GROUP BY organization_id) AS i \
         LEFT JOIN (SELECT organization_id, max(chain_seq) AS seq FROM audit_checkpoints GROUP BY organization_id) AS c \
         USING organization_id WHERE c.seq != i.seq";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let behind: u64 = env
            .ch()
            .query(BEHIND)
            .fetch_one()
            .await
            .unwrap_or_else(|e| panic!("{BEHIND}: {e:?}"));
        if behind == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{behind} chains still have items no checkpoint covers after 30 s (is the signing key used?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    require_browser_tools();
    let started = Instant::now();

    let env = TestEnv::new("dashboard_ui").await;
    let db = env.pg().await;
    db.batch_execute(DDL)
        .await
        .expect("create the platform schema");

    let port = free_port();
    let api = format!(
        r#"
[api]
listen = "127.0.0.1:{port}"
rate_limit_per_minute = 100000

[integrity]
checkpoint_every_items = 1

[[api.keys]]
name = "dashboard-admin"
sha256 = "{admin}"
org_id = "{ORG}"
role = "admin"

[[api.keys]]
name = "web-team"
sha256 = "{member}"
org_id = "{ORG}"
role = "member"
projects = ["proj_web"]

[[api.keys]]
name = "globex-admin"
sha256 = "{other}"
org_id = "{OTHER_ORG}"
role = "admin"
"#,
        admin = sha256_hex(&db, ADMIN_KEY).await,
        member = sha256_hex(&db, MEMBER_KEY).await,
        other = sha256_hex(&db, OTHER_ADMIN_KEY).await,
    );
    // Written here rather than with `config_file`, which adds an `[api]` section of its own.
    let config =
        std::env::temp_dir().join(format!("waltrail-dashboard-{}.toml", std::process::id()));
    std::fs::write(&config, env.config_text(&format!("{TABLES}\n{api}"))).expect("write config");

    let log = std::env::temp_dir().join(format!("waltrail-dashboard-{}.log", std::process::id()));
    let logf = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("WALTRAIL_CONTEXT_SECRET", CONTEXT_SECRET)
        .env("WALTRAIL_SIGNING_KEY", SIGNING_KEY)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("dup log"))
        .stderr(logf)
        .spawn()
        .expect("spawn waltrail");
    let mut server = Server { child, log };

    wait_http(&mut server, port).await;
    wait_slot(&db, &format!("slot_{}", env.name)).await;

    for sql in changes() {
        db.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    let want = expected_items();
    let have = env.wait_for(want).await;
    assert_eq!(have, want, "items stored before the browser test");
    let count = |sql: &'static str| {
        let ch = env.ch();
        async move {
            ch.query(sql)
                .fetch_one::<u64>()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        }
    };
    let member_items = count(
        "SELECT count(DISTINCT id) FROM audit_items WHERE organization_id = 'org_acme' AND project_id = 'proj_web'",
    )
    .await;
    // Each organization's admins see its own items and the platform-wide ones.
    let admin_items = count(
        "SELECT count(DISTINCT id) FROM audit_items WHERE organization_id = 'org_acme' OR platform_wide = 1",
    )
    .await;
    assert_eq!(
        admin_items,
        expected_admin_items(),
        "items org_acme's admin sees"
    );
    let other_items = count(
        "SELECT count(DISTINCT id) FROM audit_items WHERE organization_id = 'org_globex' OR platform_wide = 1",
    )
    .await;
    assert_eq!(
        other_items, OTHER_ADMIN_ITEMS,
        "items org_globex's admin sees"
    );
    wait_checkpoints(&env).await;
    let setup = started.elapsed();

    let screenshots = repo().join("test-output/screenshots");
    std::fs::create_dir_all(&screenshots).expect("create test-output/screenshots");
    let psql = format!("{}/psql", pg_bin());
    let node_started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("node")
            .args([
                "--test",
                "--test-reporter=spec",
                "tests/browser/dashboard.test.mjs",
            ])
            .current_dir(repo())
            .env("WALTRAIL_URL", format!("http://127.0.0.1:{port}/"))
            .env("WALTRAIL_ADMIN_KEY", ADMIN_KEY)
            .env("WALTRAIL_MEMBER_KEY", MEMBER_KEY)
            .env("WALTRAIL_ORG", ORG)
            .env("WALTRAIL_OTHER_ADMIN_KEY", OTHER_ADMIN_KEY)
            .env("WALTRAIL_OTHER_ORG", OTHER_ORG)
            .env("WALTRAIL_PG", &env.pg_url)
            .env("WALTRAIL_PSQL", &psql)
            .env("WALTRAIL_CH_URL", &env.ch_url)
            .env("WALTRAIL_CH_DB", &env.ch_db)
            .env("WALTRAIL_CHROMIUM", chromium_path())
            .env("WALTRAIL_SCREENSHOTS", &screenshots)
            .env("WALTRAIL_EXPECT_ADMIN_ITEMS", admin_items.to_string())
            .env("WALTRAIL_EXPECT_MEMBER_ITEMS", member_items.to_string())
            .env("WALTRAIL_EXPECT_OTHER_ADMIN_ITEMS", other_items.to_string())
            .env("WALTRAIL_BULK_UPDATES", BULK_UPDATES.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser test did not finish within 300 s")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("---- node tests/browser/dashboard.test.mjs ----\n{stdout}");
    if !stderr.trim().is_empty() {
        println!("---- stderr ----\n{stderr}");
    }
    println!(
        "setup {:.1} s, browser test {:.1} s; screenshots in {}",
        setup.as_secs_f64(),
        node_started.elapsed().as_secs_f64(),
        screenshots.display()
    );
    if !out.status.success() {
        println!("---- waltrail log ----\n{}", server.log_text());
    }
    server.stop();
    if out.status.success() {
        let _ = std::fs::remove_file(&config);
        let _ = std::fs::remove_file(&server.log);
    }
    assert!(
        out.status.success(),
        "the browser test failed ({}); its output is above",
        out.status
    );
}

//! The TOML configuration, with environment-variable overrides for secrets and endpoints.
//!
//! Unknown keys are errors (a typo in `redact_columns` must not silently leak a secret), and every error
//! names the file, line and key.

use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::capture::replication::{PgHost, PgParams};
use crate::capture::tls::{self, SslMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub clickhouse: ClickHouseConfig,
    #[serde(default)]
    pub capture: CaptureConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub attribution: AttributionConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    #[serde(skip)]
    pub postgres_password_override: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style connection string or `postgres://` URL. The password may come from WALTRAIL_PG_PASSWORD.
    pub url: String,
    #[serde(default = "default_slot")]
    pub slot: String,
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Create the publication when missing and keep its table list equal to the configured tables.
    #[serde(default = "yes")]
    pub manage_publication: bool,
    /// Create the replication slot when missing.
    #[serde(default = "yes")]
    pub create_slot: bool,
    /// Set REPLICA IDENTITY FULL on mapped tables that are not (needed for before-values and TOAST).
    #[serde(default = "yes")]
    pub set_replica_identity_full: bool,
    /// How often to send a standby status update; keep it well inside the server's wal_sender_timeout.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// TLS, as libpq's sslmode: disable, prefer, require, verify-ca, verify-full.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// PEM file of the roots trusted for verify-ca / verify-full (default: the public web roots).
    pub sslrootcert: Option<String>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    #[serde(default = "default_ch_url")]
    pub url: String,
    #[serde(default = "default_ch_database")]
    pub database: String,
    #[serde(default = "default_ch_user")]
    pub user: String,
    /// Prefer WALTRAIL_CLICKHOUSE_PASSWORD.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Per-request timeout for inserts and queries.
    #[serde(default = "default_ch_timeout_ms")]
    pub timeout_ms: u64,
    /// Compression of what is sent to and read from ClickHouse.
    #[serde(default)]
    pub compression: ChCompression,
}

/// LZ4 saves network (an encoded item is a few hundred bytes) at some CPU on both ends; for a ClickHouse
/// on the same host or a fast local network, `none` is cheaper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChCompression {
    #[default]
    Lz4,
    None,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Names this Postgres database in the store; default `<system id>/<database>/<slot>`.
    pub source_id: Option<String>,
    /// A batch is inserted when it holds this many items...
    #[serde(default = "default_batch_max_items")]
    pub batch_max_items: usize,
    /// ...or when its first item has waited this long.
    #[serde(default = "default_batch_max_delay_ms")]
    pub batch_max_delay_ms: u64,
    /// ...or when its encoded rows add up to this many bytes. Up to three batches are in memory at once
    /// (one filling, one queued, one being inserted).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Decoded messages buffered between the replication reader and the writer.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Bytes of decoded messages buffered between the reader and the writer.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source_id: None,
            batch_max_items: default_batch_max_items(),
            batch_max_delay_ms: default_batch_max_delay_ms(),
            batch_max_bytes: default_batch_max_bytes(),
            channel_capacity: default_channel_capacity(),
            buffer_bytes: default_buffer_bytes(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_retention_days")]
    pub days: u32,
    #[serde(default = "default_retention_interval_s")]
    pub check_interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            days: default_retention_days(),
            check_interval_s: default_retention_interval_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table`, or `table` in schema `public`.
    pub table: String,
    /// e.g. `RESOURCE_TYPE_API_KEY`.
    pub resource_type: String,
    /// Columns that identify the resource; default: the table's primary key.
    #[serde(default)]
    pub id_columns: Vec<String>,
    pub display_column: Option<String>,
    pub organization_column: Option<String>,
    pub project_column: Option<String>,
    /// Updates that change only these columns yield no item; they never appear in diffs.
    #[serde(default)]
    pub ignore_columns: Vec<String>,
    /// The item records that these changed, never their values.
    #[serde(default)]
    pub redact_columns: Vec<String>,
    /// A column whose change from NULL to a value means DELETED (and back to NULL, RESTORED).
    pub soft_delete_column: Option<String>,
    /// Checked in order on updates; the first that matches names the action.
    #[serde(default)]
    pub derived_actions: Vec<DerivedActionConfig>,
    /// Actor columns on this table's rows.
    pub actor: Option<ActorColumns>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTP server listens on (API, dashboard, health, metrics).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve the API from `waltrail run` as well (`waltrail serve` always does).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Requests per minute per key.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_minute: u32,
    /// Whether member keys see org-level items (items with no project).
    #[serde(default)]
    pub members_see_org_items: bool,
    /// Static keys (services, SIEM pulls).
    #[serde(default)]
    pub keys: Vec<StaticKey>,
    /// Keys resolved against the platform's own Postgres.
    pub platform_keys: Option<PlatformKeys>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            enabled: true,
            rate_limit_per_minute: default_rate_limit(),
            members_see_org_items: false,
            keys: Vec::new(),
            platform_keys: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// Names the key in logs and in the audit items of its exports.
    pub name: String,
    /// Hex SHA-256 of the key (`waltrail hash-key` prints it); the key itself is never stored.
    pub sha256: String,
    pub org_id: String,
    /// `admin` sees the whole org; `member` sees its `projects`.
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default)]
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformKeys {
    /// SQL run against the platform's Postgres with $1 = the hex SHA-256 of the presented key. It must return
    /// one row with columns principal_id (text), org_id (text), role (text: admin|member) and projects (text[]).
    pub query: String,
    /// How long a resolved key is trusted before asking again.
    #[serde(default = "default_key_cache_s")]
    pub cache_seconds: u64,
}

/// Columns of a mapped table that name who acted.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActorColumns {
    /// Used for creates.
    pub created_by: Option<String>,
    /// Used for updates (and soft deletes).
    pub updated_by: Option<String>,
    /// Used for deletes. `updated_by` is never used for a delete: it names the last updater, not the deleter.
    pub deleted_by: Option<String>,
    /// A column holding the id of the session that made the change (joined with [attribution.sessions]).
    pub session: Option<String>,
    /// Principal type of the ids in these columns.
    #[serde(default = "default_principal_account")]
    pub principal_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    /// Prefix of the transactional logical-decoding messages that carry request context.
    #[serde(default = "default_message_prefix")]
    pub message_prefix: String,
    /// Items of a transaction wait this long (in items) for a context message that comes after them.
    #[serde(default = "default_max_pending_items")]
    pub max_pending_items: usize,
    /// Replication origins whose changes are the system's own (principal type SYSTEM).
    #[serde(default)]
    pub system_origins: Vec<String>,
    pub accounts: Option<AccountsTable>,
    pub sessions: Option<SessionsTable>,
    pub keys: Option<KeysTable>,
    pub agents: Option<AgentsTable>,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            message_prefix: default_message_prefix(),
            max_pending_items: default_max_pending_items(),
            system_origins: Vec::new(),
            accounts: None,
            sessions: None,
            keys: None,
            agents: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsTable {
    pub table: String,
    #[serde(default = "default_id")]
    pub id_column: String,
    pub email_column: Option<String>,
    pub display_column: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsTable {
    pub table: String,
    #[serde(default = "default_id")]
    pub id_column: String,
    pub account_column: Option<String>,
    /// Values like `api`, `DASHBOARD` or `AUDIT_SOURCE_CLI`.
    pub source_column: Option<String>,
    pub auth_method_column: Option<String>,
    /// The API key the session authenticated with (joined with [attribution.keys]).
    pub key_column: Option<String>,
    /// The agent acting in this session (joined with [attribution.agents]); the account is then on-behalf-of.
    pub agent_column: Option<String>,
    pub client_ip_column: Option<String>,
    pub user_agent_column: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysTable {
    pub table: String,
    #[serde(default = "default_id")]
    pub id_column: String,
    pub name_column: Option<String>,
    pub owner_column: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsTable {
    pub table: String,
    #[serde(default = "default_id")]
    pub id_column: String,
    pub name_column: Option<String>,
    pub owner_column: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedActionConfig {
    pub action: String,
    /// Matches when any of these columns changed.
    #[serde(default)]
    pub changed: Vec<String>,
    /// Matches when this column changed from `from` (if given) to `to` (if given).
    pub column: Option<String>,
    pub from: Option<toml::Value>,
    pub to: Option<toml::Value>,
}

/// A secret string: deserializes like a string, never prints.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn yes() -> bool {
    true
}
fn default_slot() -> String {
    "waltrail".into()
}
fn default_publication() -> String {
    "waltrail".into()
}
fn default_status_interval_ms() -> u64 {
    10_000
}
fn default_sslmode() -> String {
    "prefer".into()
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_ch_url() -> String {
    "http://127.0.0.1:8123".into()
}
fn default_ch_database() -> String {
    "waltrail".into()
}
fn default_ch_user() -> String {
    "default".into()
}
fn default_ch_timeout_ms() -> u64 {
    30_000
}
fn default_batch_max_items() -> usize {
    50_000
}
fn default_batch_max_delay_ms() -> u64 {
    200
}
fn default_batch_max_bytes() -> usize {
    8 << 20
}
fn default_buffer_bytes() -> usize {
    64 << 20
}
fn default_channel_capacity() -> usize {
    4_096
}
fn default_message_prefix() -> String {
    "waltrail".into()
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_rate_limit() -> u32 {
    100
}
fn default_role() -> String {
    "member".into()
}
fn default_key_cache_s() -> u64 {
    60
}
fn default_max_pending_items() -> usize {
    10_000
}
fn default_id() -> String {
    "id".into()
}
fn default_principal_account() -> String {
    "ACCOUNT".into()
}
fn default_retention_days() -> u32 {
    30
}
fn default_retention_interval_s() -> u64 {
    3_600
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        cfg.apply_env(|k| std::env::var(k).ok());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse without environment overrides or validation (tests build configs this way).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: e.to_string(),
        })
    }

    /// Secrets and endpoints from the environment win over the file.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("WALTRAIL_PG_URL") {
            self.postgres.url = v;
        }
        if let Some(v) = get("WALTRAIL_CLICKHOUSE_URL") {
            self.clickhouse.url = v;
        }
        if let Some(v) = get("WALTRAIL_API_LISTEN") {
            self.api.listen = v;
        }
        if let Some(v) = get("WALTRAIL_CLICKHOUSE_PASSWORD") {
            self.clickhouse.password = Some(Secret(v));
        }
        if let Some(v) = get("WALTRAIL_PG_PASSWORD") {
            // Kept aside and applied when the connection parameters are built, so the URL stays as written.
            self.postgres_password_override = Some(Secret(v));
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.pg_params()?;
        if self.postgres.slot.is_empty()
            || !self
                .postgres
                .slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return bad(format!(
                "postgres.slot {:?}: a replication slot name may use only lower-case letters, digits and '_'",
                self.postgres.slot
            ));
        }
        if self.postgres.publication.is_empty() {
            return bad("postgres.publication must not be empty".into());
        }
        if self.postgres.status_interval_ms == 0 {
            return bad("postgres.status_interval_ms must be at least 1".into());
        }
        if !self.clickhouse.url.starts_with("http://")
            && !self.clickhouse.url.starts_with("https://")
        {
            return bad(format!(
                "clickhouse.url {:?} must be the HTTP interface, e.g. http://127.0.0.1:8123",
                self.clickhouse.url
            ));
        }
        if self.clickhouse.database.is_empty()
            || !self
                .clickhouse
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(format!(
                "clickhouse.database {:?}: use letters, digits and '_'",
                self.clickhouse.database
            ));
        }
        if self.capture.batch_max_items == 0
            || self.capture.channel_capacity == 0
            || self.capture.batch_max_bytes == 0
            || self.capture.buffer_bytes == 0
        {
            return bad(
                "capture.batch_max_items, batch_max_bytes, channel_capacity and buffer_bytes must be at least 1".into(),
            );
        }
        if self.retention.days == 0 {
            return bad("retention.days must be at least 1".into());
        }
        const PRINCIPALS: [&str; 5] = ["ACCOUNT", "SERVICE_KEY", "AGENT", "SYSTEM", "UNKNOWN"];
        if self.attribution.message_prefix.is_empty() {
            return bad("attribution.message_prefix must not be empty".into());
        }
        for t in self.context_tables() {
            let (schema, name) = split_table(t);
            if schema.is_empty() || name.is_empty() {
                return bad(format!(
                    "attribution table {t:?} must be `schema.table` or `table`"
                ));
            }
        }
        for t in &self.tables {
            if let Some(a) = &t.actor {
                if !PRINCIPALS.contains(&a.principal_type.as_str()) {
                    return bad(format!(
                        "tables ({}): actor.principal_type {:?} must be one of {PRINCIPALS:?}",
                        t.table, a.principal_type
                    ));
                }
                if a.session.is_some() && self.attribution.sessions.is_none() {
                    return bad(format!(
                        "tables ({}): actor.session needs an [attribution.sessions] table to join with",
                        t.table
                    ));
                }
            }
        }
        for (i, k) in self.api.keys.iter().enumerate() {
            let at = format!("api.keys[{i}] ({})", k.name);
            if k.sha256.len() != 64 || !k.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!(
                    "{at}: sha256 must be 64 hex digits (waltrail hash-key <key> prints it)"
                ));
            }
            if k.role != "admin" && k.role != "member" {
                return bad(format!(
                    "{at}: role must be admin or member, not {:?}",
                    k.role
                ));
            }
            if k.org_id.is_empty() {
                return bad(format!("{at}: org_id must not be empty"));
            }
        }
        if self.api.rate_limit_per_minute == 0 {
            return bad("api.rate_limit_per_minute must be at least 1".into());
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "api.listen {:?} must be host:port, e.g. 127.0.0.1:8080",
                self.api.listen
            ));
        }
        if self.tables.is_empty() {
            return bad("no [[tables]]: list at least one table to audit".into());
        }
        let mut seen = HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = format!("tables[{i}] ({})", t.table);
            let (schema, name) = split_table(&t.table);
            if schema.is_empty() || name.is_empty() {
                return bad(format!("{at}: table must be `schema.table` or `table`"));
            }
            if !seen.insert((schema.to_owned(), name.to_owned())) {
                return bad(format!("{at}: listed twice"));
            }
            if !t.resource_type.starts_with("RESOURCE_TYPE_") {
                return bad(format!(
                    "{at}: resource_type {:?} must start with RESOURCE_TYPE_ (e.g. RESOURCE_TYPE_API_KEY)",
                    t.resource_type
                ));
            }
            if let Some(d) = &t.display_column {
                if t.redact_columns.contains(d) {
                    return bad(format!(
                        "{at}: display_column {d:?} is also redacted; its value would leak"
                    ));
                }
            }
            for c in &t.id_columns {
                if t.redact_columns.contains(c) {
                    return bad(format!(
                        "{at}: id column {c:?} is also redacted; its value would leak"
                    ));
                }
            }
            for d in &t.derived_actions {
                if !d.action.starts_with("AUDIT_ACTION_") {
                    return bad(format!(
                        "{at}: derived action {:?} must start with AUDIT_ACTION_ (e.g. AUDIT_ACTION_ROTATED)",
                        d.action
                    ));
                }
                match (&d.column, d.changed.is_empty()) {
                    (None, true) => {
                        return bad(format!(
                            "{at}: derived action {} needs `changed = [..]` or `column` with `from`/`to`",
                            d.action
                        ))
                    }
                    (Some(_), false) => {
                        return bad(format!(
                            "{at}: derived action {} sets both `changed` and `column`; use one",
                            d.action
                        ))
                    }
                    (None, false) if d.from.is_some() || d.to.is_some() => {
                        return bad(format!("{at}: derived action {}: `from`/`to` need `column`", d.action))
                    }
                    _ => {}
                }
                if let Some(c) = &d.column {
                    if t.redact_columns.contains(c) && (d.from.is_some() || d.to.is_some()) {
                        return bad(format!(
                            "{at}: derived action {} compares redacted column {c:?}; use `changed = [{c:?}]`",
                            d.action
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn pg_params(&self) -> Result<PgParams, ConfigError> {
        let cfg = self.pg_config()?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => PgHost::Tcp(h.clone()),
            Some(tokio_postgres::config::Host::Unix(p)) => PgHost::Unix(p.clone()),
            None => PgHost::Tcp("localhost".into()),
        };
        let user = cfg.get_user().map(str::to_owned).ok_or_else(|| {
            ConfigError::Invalid(
                "postgres.url names no user (add user=... or postgres://user@...)".into(),
            )
        })?;
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let ssl_mode = SslMode::parse(&self.postgres.sslmode)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let tls = tls::client_config(
            ssl_mode,
            self.postgres.sslrootcert.as_deref().map(Path::new),
        )
        .map_err(|e| ConfigError::Invalid(format!("{e:#}")))?;
        Ok(PgParams {
            ssl_mode,
            tls,
            host,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
            dbname: cfg
                .get_dbname()
                .map(str::to_owned)
                .unwrap_or_else(|| user.clone()),
            user,
            password,
            connect_timeout: Duration::from_millis(self.postgres.connect_timeout_ms),
        })
    }

    /// Config for ordinary SQL connections (tokio-postgres), with the password override applied.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let mut cfg: tokio_postgres::Config = self.postgres.url.parse().map_err(|e| {
            ConfigError::Invalid(format!(
                "postgres.url is not a valid connection string: {e} (expected e.g. postgres://waltrail@db:5432/platform)"
            ))
        })?;
        if let Some(p) = &self.postgres_password_override {
            cfg.password(p.0.as_bytes());
        }
        cfg.application_name("waltrail");
        cfg.ssl_mode(
            match SslMode::parse(&self.postgres.sslmode)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?
            {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            },
        );
        cfg.connect_timeout(Duration::from_millis(self.postgres.connect_timeout_ms));
        Ok(cfg)
    }
}

impl Config {
    /// Tables read only for attribution context (sessions, accounts, keys...).
    pub fn context_tables(&self) -> Vec<&str> {
        let a = &self.attribution;
        [
            a.accounts.as_ref().map(|t| t.table.as_str()),
            a.sessions.as_ref().map(|t| t.table.as_str()),
            a.keys.as_ref().map(|t| t.table.as_str()),
            a.agents.as_ref().map(|t| t.table.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

pub fn split_table(t: &str) -> (&str, &str) {
    match t.split_once('.') {
        Some((s, n)) => (s, n),
        None => ("public", t),
    }
}

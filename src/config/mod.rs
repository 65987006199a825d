//! The TOML configuration, with environment-variable overrides for secrets and endpoints.
//!
//! Unknown keys are errors (a typo in `redact_columns` must not silently leak a secret), and every error
//! names the file, line and key.

use serde::Deserialize;
use std::path::Path;

mod defaults;
mod validate;
pub use validate::ignored_key;

use defaults::*;

use crate::vocab::{PrincipalType, Role, SslMode};

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
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub integrity: IntegrityConfig,
    #[serde(skip)]
    pub postgres_password_override: Option<Secret>,
    /// The secret that seals waltrail's own events, resolved by [`Config::load`] (see [`SecurityConfig`]).
    #[serde(skip, default = "random_secret")]
    pub event_secret: Secret,
    /// Where the event secret would be created, when [`Config::load_for_check`] found none there (it
    /// creates nothing: `check` is a preflight).
    #[serde(skip)]
    pub event_secret_to_create: Option<String>,
}

/// Secrets only waltrail holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Seals the events waltrail writes into the WAL (exports), so nobody else can write one. Prefer
    /// WALTRAIL_EVENT_SECRET. Every waltrail process of one deployment (run, serve) needs the same one.
    pub event_secret: Option<Secret>,
    /// Where the event secret is kept when not given: default `waltrail-event.secret` beside the config
    /// file, created (mode 0600, 32 random bytes) the first time.
    pub event_secret_file: Option<String>,
}

/// Tamper evidence: the hash chain (on by default, no key needed) and signed checkpoints (with a key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Link every item into its organization's hash chain. Off only to measure what it costs.
    #[serde(default = "yes")]
    pub chain: bool,
    /// The Ed25519 signing key for checkpoints: a file holding the 32-byte seed as 64 hex digits (`waltrail
    /// keygen` writes one). Or WALTRAIL_SIGNING_KEY. Without a key the chain still works; checkpoints are off.
    pub signing_key_file: Option<String>,
    /// Whether `run` must sign checkpoints: see [`Signing`].
    #[serde(default)]
    pub signing: Signing,
    /// Set from WALTRAIL_SIGNING_KEY or `signing_key_file` by `Config::load`.
    #[serde(skip)]
    pub signing_key: Option<Secret>,
    /// A key that signs NDJSON exports only (a file like `signing_key_file`), so that API replicas need not
    /// hold the checkpoints' key; its public key verifies exports, never checkpoints. Or
    /// WALTRAIL_EXPORT_SIGNING_KEY. Without it exports are signed with the signing key, if any.
    pub export_signing_key_file: Option<String>,
    /// Set from WALTRAIL_EXPORT_SIGNING_KEY or `export_signing_key_file` by `Config::load`.
    #[serde(skip)]
    pub export_signing_key: Option<Secret>,
    /// Public keys (`ed25519:<hex>`) whose checkpoints verify besides the current key's: keys used before a
    /// rotation.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// A chain is checkpointed after this many new items...
    #[serde(default = "default_checkpoint_every_items")]
    pub checkpoint_every_items: u64,
    /// ...or once this much commit time passed since its last checkpoint (at its next change).
    #[serde(default = "default_checkpoint_every_s")]
    pub checkpoint_every_s: u64,
    /// Also append each checkpoint as a JSON line to this file: point it at storage the operator of the
    /// store does not control (see README).
    pub checkpoint_file: Option<String>,
}

/// Whether capture signs checkpoints. Only `run` holds the key, so only `run` (and `check`) enforce it:
/// API replicas and `verify` read the same file without the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    /// Sign when a key is configured; a start without one over a store that holds the source's
    /// checkpoints is refused (the key went missing: a trail signed so far must not go on unsigned
    /// unnoticed).
    #[default]
    Auto,
    /// A start without a signing key is refused, whatever the store holds.
    Required,
    /// Never sign (a configured key is an error): a trail signed before goes on unsigned, and the moment it
    /// stopped is recorded in the trail.
    Off,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            chain: true,
            signing_key_file: None,
            signing: Signing::default(),
            signing_key: None,
            export_signing_key_file: None,
            export_signing_key: None,
            trusted_keys: Vec::new(),
            checkpoint_every_items: default_checkpoint_every_items(),
            checkpoint_every_s: default_checkpoint_every_s(),
            checkpoint_file: None,
        }
    }
}

fn random_secret() -> Secret {
    let mut b = [0u8; 32];
    // The system's CSPRNG does not fail on the platforms waltrail runs on; if it ever did, the zero key is
    // only ever used in-process by configs built without `load` (tests).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    Secret(b.iter().map(|x| format!("{x:02x}")).collect())
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
    /// How often, while streaming, the slot's state and the mapped tables' presence in the publication are
    /// checked (at most once per status update).
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// TLS, as libpq's sslmode: disable, prefer, require, verify-ca, verify-full.
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the roots trusted for verify-ca / verify-full (default: the public web roots).
    pub sslrootcert: Option<String>,
    /// On Postgres 14 and later, have large in-progress transactions streamed (protocol 2) instead of
    /// spilled to the source's disk and sent at commit; waltrail holds them in `capture.spill_dir`. Off by
    /// default: measured, it spares the source's disk and a tenth of the walsender's CPU, but costs waltrail
    /// CPU and catch-up throughput (README, Large transactions).
    #[serde(default)]
    pub streaming: bool,
}

impl PostgresConfig {
    /// The connection string as tokio-postgres reads it.
    pub fn parsed_url(&self) -> Result<tokio_postgres::Config, String> {
        self.url.parse().map_err(|e| {
            format!(
                "postgres.url is not a valid connection string: {e} (expected e.g. postgres://waltrail@db:5432/platform)"
            )
        })
    }
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
    /// A cluster from the servers' `remote_servers`: the schema is created `ON CLUSTER` as replicated local
    /// tables under Distributed ones of the same names waltrail reads and writes. Unset: one server.
    #[serde(default)]
    pub cluster: Option<String>,
    /// ZooKeeper path of each replicated table; waltrail fills `{database}` and `{table}`, the servers
    /// their own macros (`{shard}`, …).
    #[serde(default = "default_ch_replica_path")]
    pub replica_path: String,
    /// Replica name of each replicated table (a server macro by default).
    #[serde(default = "default_ch_replica_name")]
    pub replica_name: String,
    /// Cluster mode: an insert is confirmed only when this many replicas of each shard it touched hold it
    /// (`insert_quorum`); 0 = when one does.
    #[serde(default)]
    pub insert_quorum: u64,
    /// Cluster mode: how long a schema change waits for every node (`distributed_ddl_task_timeout`).
    #[serde(default = "default_ch_ddl_timeout_s")]
    pub ddl_timeout_s: u64,
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
            .field("cluster", &self.cluster)
            .field("insert_quorum", &self.insert_quorum)
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
    /// ...or when its first item has waited this long...
    #[serde(default = "default_batch_max_delay_ms")]
    pub batch_max_delay_ms: u64,
    /// ...or as soon as the stream is quiet and no insert is in flight, but not sooner than this after the
    /// previous insert began (bounds inserts per second: ClickHouse makes a part of each).
    #[serde(default = "default_batch_min_interval_ms")]
    pub batch_min_interval_ms: u64,
    /// ...or when its encoded rows add up to this many bytes. Up to three batches are in memory at once
    /// (one filling, one queued, one being inserted).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// The batches of one large transaction go into one INSERT kept open across them, up to this many
    /// items (ClickHouse's `max_insert_block_size`: one part). 0 turns it off: each batch is its own
    /// INSERT, retried in place; an open one that fails starts the session over.
    #[serde(default = "default_insert_max_items")]
    pub insert_max_items: usize,
    /// ...or this many bytes of encoded rows: ClickHouse holds an INSERT's block in memory while it forms
    /// the part, and `max_memory_usage` bounds what one query may take.
    #[serde(default = "default_insert_max_bytes")]
    pub insert_max_bytes: usize,
    /// Decoded messages buffered between the replication reader and the writer.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Bytes of decoded messages buffered between the reader and the writer.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// A column value larger than this (as JSON text) is stored truncated, with a marker, its size and its
    /// SHA-256.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Where streamed in-progress transactions wait for their commit (encrypted, unlinked files); default:
    /// the system's temporary directory.
    pub spill_dir: Option<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source_id: None,
            batch_max_items: default_batch_max_items(),
            batch_max_delay_ms: default_batch_max_delay_ms(),
            batch_min_interval_ms: default_batch_min_interval_ms(),
            batch_max_bytes: default_batch_max_bytes(),
            insert_max_items: default_insert_max_items(),
            insert_max_bytes: default_insert_max_bytes(),
            channel_capacity: default_channel_capacity(),
            buffer_bytes: default_buffer_bytes(),
            max_backoff_ms: default_max_backoff_ms(),
            max_value_bytes: default_max_value_bytes(),
            spill_dir: None,
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
    /// Configured columns a table's changes may lack: a column renamed or dropped (older changes still in
    /// the slot have it, newer ones do not) or added (the other way round). Any other configured column
    /// missing from a change stops capture, since a renamed redacted column would otherwise be stored in
    /// clear under its new name. After `RENAME COLUMN secret TO api_secret`: redact both names and list
    /// both here.
    #[serde(default)]
    pub optional_columns: Vec<String>,
    /// A renamed column's earlier names, by its current one (`{ org_id = ["org"] }`): changes committed
    /// before the rename, still in the slot, carry the old name, and bind to the role by it. The way to
    /// keep an id, organization or project column through a rename: those may not be optional (a change
    /// without them would be stored with no id or in no organization).
    #[serde(default)]
    pub former_names: std::collections::BTreeMap<String, Vec<String>>,
    /// A column whose change from NULL to a value means DELETED (and back to NULL, RESTORED).
    pub soft_delete_column: Option<String>,
    /// Checked in order on updates; the first that matches names the action.
    #[serde(default)]
    pub derived_actions: Vec<DerivedActionConfig>,
    /// Actor columns on this table's rows.
    pub actor: Option<ActorColumns>,
}

impl TableConfig {
    /// Every column the entry names, in any role, that must exist in the table (all but `optional_columns`).
    pub fn required_columns(&self) -> impl Iterator<Item = &String> {
        self.named_columns()
            .filter(|c| !self.optional_columns.contains(c))
    }

    /// Every column the entry names, in any role.
    pub fn named_columns(&self) -> impl Iterator<Item = &String> {
        let actor = self.actor.iter().flat_map(|a| {
            a.created_by
                .iter()
                .chain(&a.updated_by)
                .chain(&a.deleted_by)
                .chain(&a.session)
        });
        let derived = self
            .derived_actions
            .iter()
            .flat_map(|d| d.changed.iter().chain(&d.column));
        self.id_columns
            .iter()
            .chain(&self.display_column)
            .chain(&self.organization_column)
            .chain(&self.project_column)
            .chain(&self.soft_delete_column)
            .chain(&self.ignore_columns)
            .chain(&self.redact_columns)
            .chain(actor)
            .chain(derived)
    }

    /// The columns whose values an item carries in clear (identity, names, scope, actor): none may be
    /// redacted, or the secret would leak through them.
    pub fn clear_columns(&self) -> Vec<(&'static str, &String)> {
        let mut v: Vec<(&'static str, &String)> =
            self.id_columns.iter().map(|c| ("id_columns", c)).collect();
        v.extend(self.display_column.iter().map(|c| ("display_column", c)));
        v.extend(
            self.organization_column
                .iter()
                .map(|c| ("organization_column", c)),
        );
        v.extend(self.project_column.iter().map(|c| ("project_column", c)));
        if let Some(a) = &self.actor {
            v.extend(a.created_by.iter().map(|c| ("actor.created_by", c)));
            v.extend(a.updated_by.iter().map(|c| ("actor.updated_by", c)));
            v.extend(a.deleted_by.iter().map(|c| ("actor.deleted_by", c)));
            v.extend(a.session.iter().map(|c| ("actor.session", c)));
        }
        v
    }
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
    /// Connections to the platform's Postgres the API may hold (key lookups and export records share
    /// them); capture's own connections are not counted.
    #[serde(default = "default_pool_size")]
    pub postgres_pool_size: usize,
    /// Failed authentications (missing, unknown or rejected keys) allowed per client address and minute,
    /// counted before any key lookup; over it: 429 with Retry-After.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// Header whose last address is the client's (set by a proxy you run in front); none: the peer address.
    pub client_address_header: Option<String>,
    /// Open client connections at most (lowered at start if the open-file limit cannot hold them).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests being handled at once, across connections; more wait (within `request_timeout_ms`).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Exports streaming at once; more are answered 429.
    #[serde(default = "default_max_exports")]
    pub max_exports: usize,
    /// Of those, exports of one organization at once: one tenant's stalled exports cannot hold every
    /// place (QA36 M3).
    #[serde(default = "default_max_exports_per_org")]
    pub max_exports_per_org: usize,
    /// A request's headers must arrive within this; also how long an idle connection is kept.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request must be answered (headers) within this, or 408.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A response write that makes no progress for this long closes the connection (clients that do not read).
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// Under `waltrail run`, the API runs on a runtime of its own with this many threads (`serve` uses
    /// every core).
    #[serde(default = "default_api_threads")]
    pub threads: usize,
    /// Under `waltrail run`, the API's threads run at this nice value (0-19) above capture's: when the box is
    /// short of CPU, the scheduler serves capture (and the databases) first, the API's clients wait.
    #[serde(default = "default_api_nice")]
    pub nice: u8,
    /// Bearer token `/metrics` requires; none: open. Prefer WALTRAIL_METRICS_TOKEN.
    pub metrics_token: Option<Secret>,
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
            postgres_pool_size: default_pool_size(),
            auth_failures_per_minute: default_auth_failures(),
            client_address_header: None,
            max_connections: default_max_connections(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_exports: default_max_exports(),
            max_exports_per_org: default_max_exports_per_org(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            send_timeout_ms: default_send_timeout_ms(),
            threads: default_api_threads(),
            nice: default_api_nice(),
            metrics_token: None,
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
    #[serde(default)]
    pub role: Role,
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
    /// How long a key the query did not find is answered 401 without asking again.
    #[serde(default = "default_negative_cache_s")]
    pub negative_cache_seconds: u64,
    /// Keys (found or not) kept in the cache at most; the least useful are evicted first.
    #[serde(default = "default_key_cache_entries")]
    pub cache_entries: u64,
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
    /// An UPDATE names its actor by `updated_by` only when it changed the column (told from the old row,
    /// REPLICA IDENTITY FULL): Postgres cannot say whether a statement wrote the value the row held, and
    /// an UPDATE that left it names the last updater.
    #[serde(default)]
    pub updated_by_only_when_changed: bool,
    /// Principal type of the ids in these columns.
    #[serde(default = "default_principal_account")]
    pub principal_type: PrincipalType,
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
    /// Bytes of the items a transaction holds back for a later context message; past it they go out as
    /// they are (a huge transaction cannot hold memory hostage).
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// At start-up, the platform tables are wound back to where streaming resumes by reading what the slot
    /// holds beyond it once more, unless it is more WAL than this (0: never).
    #[serde(default = "default_rewind_max_bytes")]
    pub rewind_max_bytes: u64,
    /// Replication origins whose changes are the system's own (principal type SYSTEM).
    #[serde(default)]
    pub system_origins: Vec<String>,
    /// Trust only context messages sealed with `context_secret` (HMAC-SHA256); others are recorded as
    /// rejected and not used.
    #[serde(default)]
    pub require_signed_context: bool,
    /// Store a session's id as `sha256:` and the first 16 bytes of its SHA-256 instead of as it is: for
    /// platforms whose session id is the bearer token itself (the id still joins the platform tables).
    #[serde(default)]
    pub hash_session_ids: bool,
    /// The secret the platform seals context messages with. Prefer WALTRAIL_CONTEXT_SECRET.
    pub context_secret: Option<Secret>,
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
            max_pending_bytes: default_max_pending_bytes(),
            rewind_max_bytes: default_rewind_max_bytes(),
            system_origins: Vec::new(),
            require_signed_context: false,
            hash_session_ids: false,
            context_secret: None,
            accounts: None,
            sessions: None,
            keys: None,
            agents: None,
        }
    }
}

/// A column of an `[attribution.*]` table and where its value lands in an item.
#[derive(Debug, Clone, Copy)]
pub struct AttributionColumn<'a> {
    /// `accounts`, `sessions`, `keys` or `agents`.
    pub section: &'static str,
    /// The key naming the column, e.g. `email_column`.
    pub key: &'static str,
    pub table: &'a str,
    pub column: &'a str,
    /// The item fields that carry its value.
    pub lands: &'static str,
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
        Self::load_with(path, true)
    }

    /// As `load`, but a missing event secret file is not created (a process-only secret stands in, and
    /// `event_secret_to_create` says where `run` would create it).
    pub fn load_for_check(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, create_secret: bool) -> Result<Config, ConfigError> {
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
        let from_env = cfg.apply_env(|k| std::env::var(k).ok())?;
        // An error about a value the environment gave names the variable, not only the key.
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid(m) => {
                let vars: Vec<&str> = from_env
                    .iter()
                    .filter(|(_, key)| m.contains(key))
                    .map(|(var, _)| *var)
                    .collect();
                ConfigError::Invalid(if vars.is_empty() {
                    m
                } else {
                    format!("{m} (the value came from {})", vars.join(", "))
                })
            }
            other => other,
        })?;
        if create_secret || cfg.security.event_secret.is_some() {
            cfg.event_secret = cfg.resolve_event_secret(path)?;
        } else {
            let file = cfg.event_secret_path(path);
            if file.exists() {
                cfg.event_secret = cfg.resolve_event_secret(path)?;
            } else {
                cfg.event_secret_to_create = Some(file.display().to_string());
            }
        }
        let read_key = |what: &str, f: &String| {
            std::fs::read_to_string(f)
                .map(|text| Secret(text.trim().to_owned()))
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read integrity.{what} {f}: {e} (waltrail keygen --out {f} writes one)"
                    ))
                })
        };
        if cfg.integrity.signing_key.is_none() {
            if let Some(f) = &cfg.integrity.signing_key_file {
                cfg.integrity.signing_key = Some(read_key("signing_key_file", f)?);
            }
        }
        if cfg.integrity.export_signing_key.is_none() {
            if let Some(f) = &cfg.integrity.export_signing_key_file {
                cfg.integrity.export_signing_key = Some(read_key("export_signing_key_file", f)?);
            }
        }
        cfg.validate_signing_key()?;
        Ok(cfg)
    }

    /// Parse without environment overrides or validation (tests build configs this way).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: e.to_string(),
        })?;
        // Without `load` there is no file to keep a generated secret in: a given one, else one for this
        // process only.
        if let Some(s) = &cfg.security.event_secret {
            cfg.event_secret = s.clone();
        }
        Ok(cfg)
    }

    /// Secrets and endpoints from the environment win over the file. Returns the variables applied, with
    /// the key each set (for errors, which name the key). A variable set but empty is refused (it would
    /// silently replace the file's value with nothing), except a password, which may be empty.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(&'static str, &'static str)>, ConfigError> {
        let mut applied = Vec::new();
        let mut take = |var: &'static str, key: &'static str, may_be_empty: bool| {
            match get(var) {
                Some(v) if v.is_empty() && !may_be_empty => Err(ConfigError::Invalid(format!(
                    "{var} is set but empty: unset it (the file's {key} is then used) or give it a value"
                ))),
                Some(v) => {
                    applied.push((var, key));
                    Ok(Some(v))
                }
                None => Ok(None),
            }
        };
        if let Some(v) = take("WALTRAIL_PG_URL", "postgres.url", false)? {
            self.postgres.url = v;
        }
        if let Some(v) = take("WALTRAIL_CLICKHOUSE_URL", "clickhouse.url", false)? {
            self.clickhouse.url = v;
        }
        if let Some(v) = take("WALTRAIL_API_LISTEN", "api.listen", false)? {
            self.api.listen = v;
        }
        if let Some(v) = take("WALTRAIL_CLICKHOUSE_PASSWORD", "clickhouse.password", true)? {
            self.clickhouse.password = Some(Secret(v));
        }
        if let Some(v) = take("WALTRAIL_EVENT_SECRET", "security.event_secret", false)? {
            self.security.event_secret = Some(Secret(v));
        }
        if let Some(v) = take("WALTRAIL_SIGNING_KEY", "integrity signing key", false)? {
            self.integrity.signing_key = Some(Secret(v.trim().to_owned()));
        }
        if let Some(v) = take(
            "WALTRAIL_EXPORT_SIGNING_KEY",
            "integrity export signing key",
            false,
        )? {
            self.integrity.export_signing_key = Some(Secret(v.trim().to_owned()));
        }
        if let Some(v) = take(
            "WALTRAIL_CONTEXT_SECRET",
            "attribution.context_secret",
            false,
        )? {
            self.attribution.context_secret = Some(Secret(v));
        }
        if let Some(v) = take("WALTRAIL_METRICS_TOKEN", "api.metrics_token", false)? {
            self.api.metrics_token = Some(Secret(v));
        }
        if let Some(v) = take("WALTRAIL_PG_PASSWORD", "postgres password", true)? {
            // Kept aside and applied when the connection parameters are built, so the URL stays as written.
            self.postgres_password_override = Some(Secret(v));
        }
        Ok(applied)
    }
}

impl Config {
    /// The configured tables as (schema, table), in config order.
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|t| {
                let (s, n) = split_table(&t.table);
                (s.to_owned(), n.to_owned())
            })
            .collect()
    }

    fn validate_signing_key(&self) -> Result<(), ConfigError> {
        let keys = [
            ("signing key", &self.integrity.signing_key),
            ("export signing key", &self.integrity.export_signing_key),
        ];
        for (what, k) in keys {
            if let Some(k) = k {
                if k.0.len() != 64 || !k.0.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ConfigError::Invalid(format!(
                        "the integrity {what} must be 64 hex digits (a 32-byte Ed25519 seed); waltrail keygen writes one"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Where the event secret is kept when not given.
    fn event_secret_path(&self, config_path: &Path) -> std::path::PathBuf {
        match &self.security.event_secret_file {
            Some(f) => std::path::PathBuf::from(f),
            None => config_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("waltrail-event.secret"),
        }
    }

    /// The event secret: given, or read from its file, or created there the first time.
    fn resolve_event_secret(&self, config_path: &Path) -> Result<Secret, ConfigError> {
        if let Some(s) = &self.security.event_secret {
            return Ok(s.clone());
        }
        let file = self.event_secret_path(config_path);
        let bad = |what: String| {
            ConfigError::Invalid(format!(
                "{what}; set security.event_secret_file to a writable path, or WALTRAIL_EVENT_SECRET (the same on every waltrail process of this deployment)"
            ))
        };
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let secret = text.trim().to_owned();
                if secret.len() < 32 {
                    return Err(bad(format!(
                        "event secret file {} holds fewer than 32 characters",
                        file.display()
                    )));
                }
                Ok(Secret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                // Written whole under a private name, then linked into place: a second process starting at
                // the same moment either wins the link or reads the first one's complete file.
                let secret = random_secret();
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)?;
                    f.write_all(format!("{}\n", secret.0).as_bytes())?;
                    f.sync_all()
                };
                let linked = write().and_then(|_| std::fs::hard_link(&tmp, &file));
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        tracing::info!(file = %file.display(), "created the secret that seals waltrail's own events");
                        Ok(secret)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.resolve_event_secret(config_path)
                    }
                    Err(e) => Err(bad(format!(
                        "cannot create event secret file {}: {e}",
                        file.display()
                    ))),
                }
            }
            Err(e) => Err(bad(format!(
                "cannot read event secret file {}: {e}",
                file.display()
            ))),
        }
    }

    /// Every column an `[attribution.*]` table names, with where its value lands in the items that
    /// principal acts in, as (section, key, table, column, where). Each is copied into items in clear,
    /// so none may be a column redacted where that table is also mapped (QA48a H2). The session id is
    /// left out under `hash_session_ids`: it is stored hashed.
    pub fn attribution_columns(&self) -> Vec<AttributionColumn<'_>> {
        let a = &self.attribution;
        type Named<'a> = (&'static str, Option<&'a String>, &'static str);
        let mut out = Vec::new();
        fn add<'a>(
            out: &mut Vec<AttributionColumn<'a>>,
            section: &'static str,
            table: &'a str,
            cols: [Named<'a>; 3],
        ) {
            for (key, c, lands) in cols {
                if let Some(c) = c {
                    out.push(AttributionColumn {
                        section,
                        key,
                        table,
                        column: c,
                        lands,
                    });
                }
            }
        }
        if let Some(t) = &a.accounts {
            add(
                &mut out,
                "accounts",
                &t.table,
                [
                    (
                        "id_column",
                        Some(&t.id_column),
                        "principal_id and on_behalf_of_id",
                    ),
                    (
                        "email_column",
                        t.email_column.as_ref(),
                        "actor_email and the summary",
                    ),
                    (
                        "display_column",
                        t.display_column.as_ref(),
                        "display_name and the summary",
                    ),
                ],
            );
        }
        if let Some(t) = &a.sessions {
            let id = (!a.hash_session_ids).then_some(&t.id_column);
            add(
                &mut out,
                "sessions",
                &t.table,
                [
                    ("id_column", id, "session_id"),
                    (
                        "account_column",
                        t.account_column.as_ref(),
                        "principal_id and on_behalf_of_id",
                    ),
                    ("source_column", t.source_column.as_ref(), "source"),
                ],
            );
            add(
                &mut out,
                "sessions",
                &t.table,
                [
                    (
                        "auth_method_column",
                        t.auth_method_column.as_ref(),
                        "auth_method",
                    ),
                    ("key_column", t.key_column.as_ref(), "key_id"),
                    ("agent_column", t.agent_column.as_ref(), "principal_id"),
                ],
            );
            add(
                &mut out,
                "sessions",
                &t.table,
                [
                    ("client_ip_column", t.client_ip_column.as_ref(), "client_ip"),
                    (
                        "user_agent_column",
                        t.user_agent_column.as_ref(),
                        "user_agent",
                    ),
                    ("", None, ""),
                ],
            );
        }
        if let Some(t) = &a.keys {
            add(
                &mut out,
                "keys",
                &t.table,
                [
                    ("id_column", Some(&t.id_column), "principal_id and key_id"),
                    (
                        "name_column",
                        t.name_column.as_ref(),
                        "display_name and the summary",
                    ),
                    ("owner_column", t.owner_column.as_ref(), "on_behalf_of_id"),
                ],
            );
        }
        if let Some(t) = &a.agents {
            add(
                &mut out,
                "agents",
                &t.table,
                [
                    ("id_column", Some(&t.id_column), "principal_id"),
                    (
                        "name_column",
                        t.name_column.as_ref(),
                        "display_name and the summary",
                    ),
                    ("owner_column", t.owner_column.as_ref(), "on_behalf_of_id"),
                ],
            );
        }
        out
    }

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

/// For a table not found whose name holds a dot: how the name was read (the first dot separates schema
/// and table, so a schema whose name holds a dot cannot be named).
pub fn dotted_hint(schema: &str, table: &str) -> String {
    if schema.starts_with('"') || table.starts_with('"') || table.contains("\".\"") {
        // SQL quoting by habit: the names are meant as they are.
        let unquote = |s: &str| {
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(s)
                .replace("\"\"", "\"")
        };
        let whole = format!("{schema}.{table}");
        let (s, t) = match whole.split_once("\".\"") {
            Some((s, t)) => (format!("{s}\""), format!("\"{t}")),
            None => (schema.to_owned(), table.to_owned()),
        };
        return format!(
            " (names are written as they are, without SQL quotes: table = {:?})",
            format!("{}.{}", unquote(&s), unquote(&t))
        );
    }
    if table.contains('.') {
        format!(
            " (read as schema {schema:?}, table {table:?}: the first dot separates them, so a schema whose \
             name holds a dot cannot be audited; rename it)"
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests;

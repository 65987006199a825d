//! What a config must satisfy before anything connects: each section checked by its own function, each
//! error naming the key and the fix.

use std::collections::HashSet;

use super::{split_table, Config, ConfigError, TableConfig};
use crate::vocab::{action, resource_type};

type Checked = Result<(), ConfigError>;

fn bad(m: String) -> Checked {
    Err(ConfigError::Invalid(m))
}

impl Config {
    pub fn validate(&self) -> Checked {
        self.validate_postgres()?;
        self.validate_clickhouse()?;
        self.validate_capture()?;
        self.validate_attribution()?;
        self.validate_api()?;
        for k in &self.integrity.trusted_keys {
            let hex = k.trim().strip_prefix("ed25519:").unwrap_or(k.trim());
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!(
                    "integrity.trusted_keys: {k:?} must be ed25519:<64 hex digits> (waltrail keys prints them)"
                ));
            }
        }
        if self.integrity.checkpoint_every_items == 0 || self.integrity.checkpoint_every_s == 0 {
            return bad(
                "integrity.checkpoint_every_items and checkpoint_every_s must be at least 1".into(),
            );
        }
        if self.tables.is_empty() {
            return bad("no [[tables]]: list at least one table to audit".into());
        }
        let mut seen = HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = format!("tables[{i}] ({})", t.table);
            let (schema, name) = split_table(&t.table);
            if !seen.insert((schema.to_owned(), name.to_owned())) {
                return bad(format!("{at}: listed twice"));
            }
            self.validate_table(&at, t)?;
        }
        Ok(())
    }

    fn validate_postgres(&self) -> Checked {
        let pg = &self.postgres;
        let url = pg.parsed_url().map_err(ConfigError::Invalid)?;
        if url.get_user().is_none() {
            return bad("postgres.url names no user (add user=... or postgres://user@...)".into());
        }
        if pg.slot.is_empty()
            || !pg
                .slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return bad(format!(
                "postgres.slot {:?}: a replication slot name may use only lower-case letters, digits and '_'",
                pg.slot
            ));
        }
        if pg.publication.is_empty() {
            return bad("postgres.publication must not be empty".into());
        }
        if pg.status_interval_ms == 0 {
            return bad("postgres.status_interval_ms must be at least 1".into());
        }
        Ok(())
    }

    fn validate_clickhouse(&self) -> Checked {
        let ch = &self.clickhouse;
        if !ch.url.starts_with("http://") && !ch.url.starts_with("https://") {
            return bad(format!(
                "clickhouse.url {:?} must be the HTTP interface, e.g. http://127.0.0.1:8123",
                ch.url
            ));
        }
        if ch.database.is_empty()
            || !ch
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(format!(
                "clickhouse.database {:?}: use letters, digits and '_'",
                ch.database
            ));
        }
        let plain =
            |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match &ch.cluster {
            Some(c) if !plain(c) => {
                return bad(format!(
                    "clickhouse.cluster {c:?}: a cluster name from the servers' remote_servers (letters, digits, '_')"
                ))
            }
            Some(_) => {
                // Both end up between single quotes in the table engine: keep them to what a ZooKeeper path
                // and a macro need.
                let path_ok = |v: &str| {
                    !v.is_empty()
                        && v.chars().all(|c| {
                            c.is_ascii_alphanumeric() || "/_-.{}".contains(c)
                        })
                };
                if !ch.replica_path.starts_with('/')
                    || !path_ok(&ch.replica_path)
                    || !ch.replica_path.contains("{table}")
                {
                    return bad(format!(
                        "clickhouse.replica_path {:?}: an absolute ZooKeeper path containing {{table}} (and usually {{shard}} and {{database}}), of letters, digits, '/_-.' and macros",
                        ch.replica_path
                    ));
                }
                if !path_ok(&ch.replica_name) {
                    return bad(format!(
                        "clickhouse.replica_name {:?}: a server macro such as {{replica}}, or letters, digits, '_-.'",
                        ch.replica_name
                    ));
                }
                if ch.ddl_timeout_s == 0 {
                    return bad("clickhouse.ddl_timeout_s must be at least 1".into());
                }
            }
            None if ch.insert_quorum > 0 => {
                return bad(
                    "clickhouse.insert_quorum needs clickhouse.cluster (a single server has no replicas to wait for)"
                        .into(),
                )
            }
            None => {}
        }
        Ok(())
    }

    fn validate_capture(&self) -> Checked {
        let c = &self.capture;
        // A poller's cursor carries each source id (length-prefixed in one byte): see store::query.
        if let Some(id) = &c.source_id {
            if id.is_empty() || id.len() > 255 {
                return bad(format!(
                    "capture.source_id must be 1 to 255 bytes long (it is {})",
                    id.len()
                ));
            }
        }
        if c.spill_dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return bad("capture.spill_dir is empty: give a directory, or leave it out for the system's temporary directory".into());
        }
        if c.max_value_bytes < 1024 {
            return bad("capture.max_value_bytes must be at least 1024".into());
        }
        if c.batch_max_items == 0
            || c.channel_capacity == 0
            || c.batch_max_bytes == 0
            || c.buffer_bytes == 0
        {
            return bad(
                "capture.batch_max_items, batch_max_bytes, channel_capacity and buffer_bytes must be at least 1".into(),
            );
        }
        if self.retention.days == 0 {
            return bad("retention.days must be at least 1".into());
        }
        Ok(())
    }

    fn validate_attribution(&self) -> Checked {
        if self.attribution.require_signed_context && self.attribution.context_secret.is_none() {
            return bad("attribution.require_signed_context needs attribution.context_secret (or WALTRAIL_CONTEXT_SECRET): the secret the platform seals its context messages with".into());
        }
        if self.attribution.max_pending_bytes == 0 {
            return bad("attribution.max_pending_bytes must be at least 1".into());
        }
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
            table_name_lengths(&format!("attribution table {t:?}"), schema, name)?;
        }
        Ok(())
    }

    fn validate_api(&self) -> Checked {
        for (i, k) in self.api.keys.iter().enumerate() {
            let at = format!("api.keys[{i}] ({})", k.name);
            if k.sha256.len() != 64 || !k.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!(
                    "{at}: sha256 must be 64 hex digits (waltrail hash-key <key> prints it)"
                ));
            }
            if k.org_id.is_empty() {
                return bad(format!("{at}: org_id must not be empty"));
            }
        }
        let api = &self.api;
        for (name, v) in [
            ("rate_limit_per_minute", api.rate_limit_per_minute as u64),
            (
                "auth_failures_per_minute",
                api.auth_failures_per_minute as u64,
            ),
            ("postgres_pool_size", api.postgres_pool_size as u64),
            ("max_connections", api.max_connections as u64),
            (
                "max_concurrent_requests",
                api.max_concurrent_requests as u64,
            ),
            ("max_exports", api.max_exports as u64),
            ("max_exports_per_org", api.max_exports_per_org as u64),
            ("header_read_timeout_ms", api.header_read_timeout_ms),
            ("request_timeout_ms", api.request_timeout_ms),
            ("send_timeout_ms", api.send_timeout_ms),
            ("threads", api.threads as u64),
        ] {
            if v == 0 {
                return bad(format!("api.{name} must be at least 1"));
            }
        }
        if api.max_exports_per_org > api.max_exports {
            return bad(format!(
                "api.max_exports_per_org = {} is more than api.max_exports = {}: one organization could \
                 take every export place; set it at most {} (below it, so that others keep places)",
                api.max_exports_per_org, api.max_exports, api.max_exports
            ));
        }
        if api.nice > 19 {
            return bad(format!(
                "api.nice = {}: a nice value from 0 (the API competes with capture for CPU) to 19",
                api.nice
            ));
        }
        if let Some(h) = &api.client_address_header {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return bad(format!(
                    "api.client_address_header {h:?} is not a header name (e.g. \"X-Forwarded-For\")"
                ));
            }
        }
        if api.metrics_token.as_ref().is_some_and(|t| t.0.len() < 16) {
            return bad(
                "api.metrics_token must be at least 16 characters (WALTRAIL_METRICS_TOKEN)".into(),
            );
        }
        if let Some(p) = &api.platform_keys {
            if p.cache_entries == 0 {
                return bad("api.platform_keys.cache_entries must be at least 1".into());
            }
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "api.listen {:?} must be an IP address and a port, e.g. 127.0.0.1:8080 or [::]:8080 (not a host name: say which address to listen on)",
                self.api.listen
            ));
        }
        Ok(())
    }

    fn validate_table(&self, at: &str, t: &TableConfig) -> Checked {
        let (schema, name) = split_table(&t.table);
        if schema.is_empty() || name.is_empty() {
            return bad(format!("{at}: table must be `schema.table` or `table`"));
        }
        table_name_lengths(at, schema, name)?;
        resource_type::validate(&t.resource_type)
            .map_err(|e| ConfigError::Invalid(format!("{at}: {e}")))?;
        if let Some(a) = &t.actor {
            if a.session.is_some() && self.attribution.sessions.is_none() {
                return bad(format!(
                    "{at}: actor.session needs an [attribution.sessions] table to join with"
                ));
            }
        }
        for (role, c) in t.clear_columns() {
            // A session id stored hashed does not leak what the redacted column holds.
            let hashed = role == "actor.session" && self.attribution.hash_session_ids;
            if t.redact_columns.contains(c) && !hashed {
                return bad(format!(
                    "{at}: {role} {c:?} is also redacted; its value would leak through the item's {role}"
                ));
            }
        }
        // A former name binds the column's role in changes from before the rename: a redacted one may
        // only stand for a column redacted too, or a secret's old name would carry it into a clear role.
        for (now, olds) in &t.former_names {
            if now.is_empty() || olds.iter().any(|o| o.is_empty() || o == now) {
                return bad(format!(
                    "{at}: former_names maps a column to itself or to an empty name: write {{ new_name = [\"old_name\"] }}"
                ));
            }
            if let Some(old) = olds.iter().find(|o| t.redact_columns.contains(o)) {
                if !t.redact_columns.contains(now) {
                    return bad(format!(
                        "{at}: former_names gives {now:?} the old name {old:?}, which is redacted: redact {now:?} too, \
                         or changes from before the rename would show the secret in {now:?}'s role"
                    ));
                }
            }
        }
        self.validate_platform_table(at, t)?;
        // An update changing only ignored columns yields no item: an ignored identity or scope column
        // would hide a resource changing its id or moving to another organization (QA48a M3). A soft-delete
        // or derived-action column ignored only silences a rule, which `check` and `run` warn of.
        let identity = t
            .id_columns
            .iter()
            .map(|c| ("id_columns", c))
            .chain(
                t.organization_column
                    .iter()
                    .map(|c| ("organization_column", c)),
            )
            .chain(t.project_column.iter().map(|c| ("project_column", c)));
        for (role, c) in identity {
            if t.ignore_columns.contains(c) {
                return bad(format!(
                    "{at}: {role} {c:?} is also in ignore_columns: an update changing it alone would leave no \
                     item, so a resource {} would not be in the trail; take {c:?} out of ignore_columns",
                    if role == "id_columns" {
                        "changing its id"
                    } else {
                        "moving to another scope"
                    }
                ));
            }
        }
        for d in &t.derived_actions {
            action::validate(&d.action)
                .map_err(|e| ConfigError::Invalid(format!("{at}: derived action: {e}")))?;
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
                    return bad(format!(
                        "{at}: derived action {}: `from`/`to` need `column`",
                        d.action
                    ))
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
        Ok(())
    }

    /// A mapped table that is also an `[attribution.*]` table: what its redaction hides in its own items
    /// must not come out in clear through the items its accounts or sessions act in (QA48a H2).
    fn validate_platform_table(&self, at: &str, t: &TableConfig) -> Checked {
        let here = split_table(&t.table);
        for a in self.attribution_columns() {
            if split_table(a.table) == here && t.redact_columns.iter().any(|c| c == a.column) {
                return bad(format!(
                    "{at}: redact_columns names {:?}, which attribution.{}.{} also reads: every item its {} \
                     acts in would carry the value in clear ({}); take {} out of [attribution.{}], or {:?} \
                     out of redact_columns if it is no secret",
                    a.column, a.section, a.key, &a.section[..a.section.len() - 1], a.lands, a.key,
                    a.section, a.column
                ));
            }
        }
        // hash_session_ids says session ids are credentials: the sessions table's own items would carry
        // each one in clear (its resource id, its diff), so that table is audited only with it redacted.
        if let Some(s) = self
            .attribution
            .sessions
            .as_ref()
            .filter(|s| self.attribution.hash_session_ids && split_table(&s.table) == here)
        {
            if !t.redact_columns.contains(&s.id_column) {
                return bad(format!(
                    "{at}: attribution.hash_session_ids stores session ids hashed (they are credentials), but \
                     this is the [attribution.sessions] table: its own items would carry each session's {:?} \
                     in clear (resource id and diff). Add {:?} to redact_columns and set id_columns to a \
                     column that is not the session id (a surrogate key), or leave the table out of [[tables]]",
                    s.id_column, s.id_column
                ));
            }
        }
        Ok(())
    }
}

/// Postgres names are at most 63 bytes (it cuts longer ones when they are created, so a longer name in the
/// config can never match).
fn table_name_lengths(at: &str, schema: &str, name: &str) -> Checked {
    for (what, part) in [("schema", schema), ("table", name)] {
        if part.len() > 63 {
            return bad(format!(
                "{at}: the {what} name is {} bytes; Postgres names are at most 63 (it cuts longer ones when \
                 they are created): write the name as Postgres stores it",
                part.len()
            ));
        }
    }
    Ok(())
}

/// The refusal of a primary key (the resource id, as id_columns is not set) that is also ignored: an update
/// changing only ignored columns yields no item, so a resource changing its id would leave none. Said by
/// the start (which reads the key) and by `check` alike.
pub fn ignored_key(table: &str, column: &str) -> String {
    format!(
        "table {table}: its resource id is column {column:?} (the primary key, as id_columns is not set), which \
         is also in ignore_columns: an update changing the id would leave no item; take {column:?} out of \
         ignore_columns"
    )
}

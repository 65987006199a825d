//! Postgres plumbing that every layer may use: connection parameters from the config, TLS with libpq's
//! sslmode meanings, ordinary SQL connections, identifier quoting and readable server errors.
//!
//! It knows nothing of capture, audit, store or api; they all reach Postgres through it (capture for the
//! catalog and the replication connection's parameters, api for key lookups and export records).

pub mod tls;

use anyhow::{anyhow, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

use crate::config::Config;
use crate::vocab::SslMode;

/// Where and how to reach Postgres, parsed from the configured connection string.
#[derive(Clone)]
pub struct PgParams {
    pub ssl_mode: SslMode,
    /// TLS settings; `None` when sslmode is disable.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub host: PgHost,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub enum PgHost {
    Tcp(String),
    Unix(std::path::PathBuf),
}

/// The replication connection's parameters (and the check that TLS settings are usable).
pub fn params(cfg: &Config) -> Result<PgParams> {
    let pg = sql_config(cfg)?;
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => PgHost::Tcp(h.clone()),
        Some(tokio_postgres::config::Host::Unix(p)) => PgHost::Unix(p.clone()),
        None => PgHost::Tcp("localhost".into()),
    };
    let user = pg.get_user().map(str::to_owned).ok_or_else(|| {
        anyhow!("config: postgres.url names no user (add user=... or postgres://user@...)")
    })?;
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let ssl_mode = cfg.postgres.sslmode;
    let tls = tls::client_config(ssl_mode, cfg.postgres.sslrootcert.as_deref().map(Path::new))
        .map_err(|e| anyhow!("config: {e:#}"))?;
    Ok(PgParams {
        ssl_mode,
        tls,
        host,
        port: pg.get_ports().first().copied().unwrap_or(5432),
        dbname: pg
            .get_dbname()
            .map(str::to_owned)
            .unwrap_or_else(|| user.clone()),
        user,
        password,
        connect_timeout: Duration::from_millis(cfg.postgres.connect_timeout_ms),
    })
}

/// Config for ordinary SQL connections (tokio-postgres), with the password override applied.
pub fn sql_config(cfg: &Config) -> Result<tokio_postgres::Config> {
    let mut pg = cfg
        .postgres
        .parsed_url()
        .map_err(|e| anyhow!("config: {e}"))?;
    if let Some(p) = &cfg.postgres_password_override {
        pg.password(p.0.as_bytes());
    }
    pg.application_name("waltrail");
    pg.ssl_mode(match cfg.postgres.sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        // The certificate itself is checked by our rustls verifier (tls.rs), which libpq's modes map onto.
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    pg.connect_timeout(Duration::from_millis(cfg.postgres.connect_timeout_ms));
    Ok(pg)
}

/// Open an ordinary SQL connection (catalog reads, setup, key lookups). The connection task ends with the
/// client.
pub async fn connect(cfg: &Config) -> Result<Client> {
    let mut pg = sql_config(cfg)?;
    // Capture's own statements (the start-up rewind reads the slot's whole unconfirmed window) must not
    // be cut by timeouts set on the role or database for the platform's sessions, as pg_dump does.
    let mut options = pg.get_options().map(str::to_owned).unwrap_or_default();
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str("-c statement_timeout=0 -c idle_in_transaction_session_timeout=0");
    pg.options(&options);
    let params = params(cfg)?;
    let fail = |e: tokio_postgres::Error| {
        anyhow!(
            "cannot connect to Postgres ({:?} port {} database {} user {}): {}",
            params.host,
            params.port,
            params.dbname,
            params.user,
            error_text(&e)
        )
    };
    let client = match &params.tls {
        Some(tls) => {
            let (client, conn) = pg
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (**tls).clone(),
                ))
                .await
                .map_err(fail)?;
            tokio::spawn(watch_connection(conn));
            client
        }
        None => {
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            tokio::spawn(watch_connection(conn));
            client
        }
    };
    Ok(client)
}

/// A bounded pool of ordinary SQL connections (the API's key lookups and export records), built on the same
/// connection config and TLS as [`connect`], so sslmode means the same. Connections are opened lazily, at
/// most `size`; a caller waits at most `wait` for one (then gets an error, never a new connection).
pub fn pool(cfg: &Config, size: usize, wait: Duration) -> Result<deadpool_postgres::Pool> {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
    let pg = sql_config(cfg)?;
    let params = params(cfg)?;
    let mc = ManagerConfig {
        // A cheap check that the connection is still open; a broken one is replaced.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &params.tls {
        Some(tls) => Manager::from_config(
            pg,
            tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone()),
            mc,
        ),
        None => Manager::from_config(pg, tokio_postgres::NoTls, mc),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(params.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| anyhow!("cannot build the Postgres connection pool: {e}"))
}

/// A pooled connection's error as readable text (the server's message when there is one).
pub fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => error_text(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            "no Postgres connection free in the pool in time".into()
        }
        other => other.to_string(),
    }
}

async fn watch_connection<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(
    conn: F,
) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "Postgres SQL connection ended");
    }
}

/// tokio-postgres hides the server's message behind "db error"; show it.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(h) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(h);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// An identifier as SQL text: `a"b` → `"a""b"`.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A string literal as SQL text: `it's` → `'it''s'`.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `schema.table` with both parts quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified("public", "Api Keys"), "\"public\".\"Api Keys\"");
    }
}

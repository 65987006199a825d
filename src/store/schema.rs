//! Versioned schema: the files under `sql/clickhouse/`, applied in order, each once.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::ClickHouseConfig;
use crate::store::cluster::{self, Layout};
use crate::store::sql::Select;

/// (version, name, SQL). Embedded so the binary carries its schema.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_audit_items",
        include_str!("../../sql/clickhouse/0001_audit_items.sql"),
    ),
    (
        2,
        "0002_integrity",
        include_str!("../../sql/clickhouse/0002_integrity.sql"),
    ),
    (
        3,
        "0003_chain",
        include_str!("../../sql/clickhouse/0003_chain.sql"),
    ),
    (
        4,
        "0004_sources",
        include_str!("../../sql/clickhouse/0004_sources.sql"),
    ),
    (
        5,
        "0005_confirm_bound",
        include_str!("../../sql/clickhouse/0005_confirm_bound.sql"),
    ),
    (
        6,
        "0006_redaction_baseline",
        include_str!("../../sql/clickhouse/0006_redaction_baseline.sql"),
    ),
    (
        7,
        "0007_checkpoint_openings",
        include_str!("../../sql/clickhouse/0007_checkpoint_openings.sql"),
    ),
    (
        8,
        "0008_rosters",
        include_str!("../../sql/clickhouse/0008_rosters.sql"),
    ),
    (
        9,
        "0009_pending_gaps",
        include_str!("../../sql/clickhouse/0009_pending_gaps.sql"),
    ),
    (
        10,
        "0010_publication_stamp",
        include_str!("../../sql/clickhouse/0010_publication_stamp.sql"),
    ),
];

pub const ITEMS_TABLE: &str = "audit_items";

#[derive(Debug, clickhouse::Row, Deserialize)]
pub(crate) struct Version {
    version: u32,
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS waltrail_migrations \
     (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version";

/// Apply the migrations not yet applied, in the configured layout (one server or `ON CLUSTER`). Returns
/// the versions it applied.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<u32>> {
    let layout = Layout::of(cfg);
    // A schema change on a cluster waits for every node, up to this; then it names those that did not answer.
    // `wait_end_of_query` holds the answer (a line per node) until every node has run the statement, so
    // a node's failure arrives as an HTTP error rather than inside a 200 already sent.
    let ddl = |c: clickhouse::Client| match layout.cluster() {
        Some(_) => c
            .with_setting(
                "distributed_ddl_task_timeout",
                cfg.ddl_timeout_s.to_string(),
            )
            .with_setting("wait_end_of_query", "1"),
        None => c,
    };
    let base = ddl(super::base_client(cfg));
    let client = ddl(super::client(cfg));
    if let Some(cluster) = layout.cluster() {
        cluster::nodes(&base, cluster)
            .await
            .with_context(|| format!("clickhouse.cluster at {}", cfg.url))?;
    }
    run(
        &base,
        &layout,
        &cluster::create_database(&layout, &cfg.database),
    )
    .await
    .with_context(|| {
        format!(
            "creating ClickHouse database {} at {}",
            cfg.database, cfg.url
        )
    })?;
    refuse_other_layout(&client, &layout, &cfg.database).await?;
    let mut renderer = cluster::Renderer::new(layout.clone());
    for stmt in renderer.render(MIGRATIONS_TABLE)? {
        run(&client, &layout, &stmt.sql)
            .await
            .context("creating the migrations table")?;
    }
    let applied: Vec<u32> = applied_query(&client)
        .fetch_all()
        .await
        .context("reading applied migrations")?
        .into_iter()
        .map(|v| v.version)
        .collect();
    if let Some(max) = applied.iter().max() {
        let known = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
        if *max > known {
            bail!(
                "ClickHouse schema is at version {max}, newer than this waltrail knows ({known}); upgrade waltrail"
            );
        }
    }
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        // Rendered even when applied: on a cluster, later migrations build on the tables' columns.
        let stmts = renderer.render(sql)?;
        if applied.contains(version) {
            continue;
        }
        for stmt in stmts {
            // A migration interrupted after some of its columns were added is run again whole: skip those.
            if let Some((table, column)) = &stmt.adds {
                if column_exists(&client, &cfg.database, table, column).await? {
                    continue;
                }
            }
            run(&client, &layout, &stmt.sql)
                .await
                .with_context(|| format!("applying migration {name}"))?;
        }
        record_query(&client, *version, name)
            .execute()
            .await
            .with_context(|| format!("recording migration {name}"))?;
        tracing::info!(
            migration = name,
            cluster = layout.cluster(),
            "applied ClickHouse migration"
        );
        done.push(*version);
    }
    Ok(done)
}

/// The migrations applied so far.
pub(crate) fn applied_query(ch: &clickhouse::Client) -> Select<Version> {
    Select::new(ch.query("SELECT version FROM waltrail_migrations"))
}

/// Records a migration as applied.
pub(crate) fn record_query(
    ch: &clickhouse::Client,
    version: u32,
    name: &str,
) -> clickhouse::query::Query {
    ch.query("INSERT INTO waltrail_migrations (version, name, applied_at) VALUES (?, ?, now())")
        .bind(version)
        .bind(name)
}

/// Every statement of the schema for the configured layout, in the order `migrate` applies them (the
/// bookkeeping of applied versions aside).
pub fn all_statements(cfg: &ClickHouseConfig) -> Result<Vec<String>> {
    let layout = Layout::of(cfg);
    let mut out = vec![cluster::create_database(&layout, &cfg.database)];
    let mut renderer = cluster::Renderer::new(layout);
    for sql in std::iter::once(MIGRATIONS_TABLE).chain(MIGRATIONS.iter().map(|m| m.2)) {
        out.extend(renderer.render(sql)?.into_iter().map(|s| s.sql));
    }
    Ok(out)
}

/// One schema statement; on a cluster, a failure names the nodes that do not answer.
async fn run(client: &clickhouse::Client, layout: &Layout, sql: &str) -> Result<()> {
    match client.query(sql).execute().await {
        Ok(()) => Ok(()),
        Err(e) => match layout.cluster() {
            Some(c) => bail!(
                "on cluster {c}: {}. A node that was down runs the change when it is back; run waltrail migrate again once every node answers",
                cluster::explain(client, c, &e).await
            ),
            None => Err(e.into()),
        },
    }
}

/// Migrating a single-server database as a cluster (or the reverse) would mix both: refuse, with the way out.
async fn refuse_other_layout(
    client: &clickhouse::Client,
    layout: &Layout,
    database: &str,
) -> Result<()> {
    let engine = engine_query(client, database)
        .fetch_optional()
        .await
        .context("reading system.tables")?;
    match engine {
        Some(e) if !layout.accepts_engine(&e) => bail!(
            "{database}.{ITEMS_TABLE} is a {e} table, but clickhouse.cluster {} expects {}: this database was created {}. \
             Use another clickhouse.database (and copy items over with INSERT … SELECT if needed), or set clickhouse.cluster back",
            match layout.cluster() {
                Some(c) => format!("= {c:?}"),
                None => "is unset, which".into(),
            },
            layout.expected_engine(),
            match layout {
                Layout::Single => "on a cluster",
                Layout::Cluster { .. } => "for a single server",
            }
        ),
        _ => Ok(()),
    }
}

async fn column_exists(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
    column: &str,
) -> Result<bool> {
    let n = column_exists_query(client, database, table, column)
        .fetch_one()
        .await
        .context("reading system.columns")?;
    Ok(n > 0)
}

/// The engine of the items table, if it exists (see `refuse_other_layout`).
pub(crate) fn engine_query(ch: &clickhouse::Client, database: &str) -> Select<String> {
    Select::new(
        ch.query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
            .bind(database)
            .bind(ITEMS_TABLE),
    )
}

pub(crate) fn column_exists_query(
    ch: &clickhouse::Client,
    database: &str,
    table: &str,
    column: &str,
) -> Select<u64> {
    Select::new(
        ch.query(
            "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
        )
        .bind(database)
        .bind(table)
        .bind(column),
    )
}

//! Where the schema lives: one server, or a ClickHouse cluster.
//!
//! The migrations under `sql/clickhouse/` are written for one server. On a cluster each of them is rendered
//! mechanically: a table becomes a replicated local table `<name>_local` on every node (`ON CLUSTER`) and a
//! `Distributed` table under the original name, sharded by the first column of its sort key (the
//! organization for items and checkpoints, so an organization's items — and every replay of one — live on
//! one shard). Everything else in waltrail reads and writes the original names, in both layouts.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::ClickHouseConfig;
use crate::store::sql::Select;

/// The suffix of a distributed table's local (replicated) table.
pub const LOCAL_SUFFIX: &str = "_local";

/// How the configured store is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Single,
    Cluster {
        name: String,
        database: String,
        replica_path: String,
        replica_name: String,
    },
}

impl Layout {
    pub fn of(cfg: &ClickHouseConfig) -> Layout {
        match &cfg.cluster {
            None => Layout::Single,
            Some(name) => Layout::Cluster {
                name: name.clone(),
                database: cfg.database.clone(),
                replica_path: cfg.replica_path.clone(),
                replica_name: cfg.replica_name.clone(),
            },
        }
    }

    pub fn cluster(&self) -> Option<&str> {
        match self {
            Layout::Single => None,
            Layout::Cluster { name, .. } => Some(name),
        }
    }

    /// ` ON CLUSTER <name>` or nothing.
    pub fn on_cluster(&self) -> String {
        match self.cluster() {
            Some(c) => format!(" ON CLUSTER {c}"),
            None => String::new(),
        }
    }

    /// The table that holds a logical table's data on each node (for partition drops and `system.*`).
    pub fn data_table(&self, table: &str) -> String {
        match self {
            Layout::Single => table.to_owned(),
            Layout::Cluster { database, .. } => format!("{database}.{table}{LOCAL_SUFFIX}"),
        }
    }

    /// The engine a logical table must have in this layout (checked before migrating over an existing
    /// database, so a single-server schema is never silently mixed with a cluster one).
    pub fn expected_engine(&self) -> &'static str {
        match self {
            Layout::Single => "ReplacingMergeTree",
            Layout::Cluster { .. } => "Distributed",
        }
    }

    /// Whether an existing table's engine belongs to this layout. One server's table may also have been
    /// made replicated by the server itself (a `Replicated` database, or ClickHouse Cloud, which reports
    /// `SharedReplacingMergeTree`): still one table, not a Distributed one over shards.
    pub fn accepts_engine(&self, engine: &str) -> bool {
        match self {
            Layout::Single => engine.ends_with("ReplacingMergeTree"),
            Layout::Cluster { .. } => engine == "Distributed",
        }
    }
}

/// One rendered statement, and the column it adds if it is an `ADD COLUMN` (a migration interrupted after
/// some of its columns were added is run again whole, skipping those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub adds: Option<(String, String)>,
}

/// Renders migration files, in order, for a layout. On a cluster it remembers each table's columns: a
/// Distributed table cannot be altered `ON CLUSTER` when shards replicate internally (ClickHouse runs an
/// ALTER on one replica per shard, and only for replicated tables), so a column added to a table is added
/// to its replicated local table and the Distributed table is created again with it (it holds no data:
/// inserts are synchronous).
pub struct Renderer {
    layout: Layout,
    /// Distributed table → (its column list as created so far, its sharding column).
    tables: std::collections::HashMap<String, (String, String)>,
}

impl Renderer {
    pub fn new(layout: Layout) -> Renderer {
        Renderer {
            layout,
            tables: Default::default(),
        }
    }

    /// The statements of one migration file. Fails on a statement it cannot place on a cluster (every
    /// shipped migration is rendered in both layouts by a unit test). Every migration must be rendered, in
    /// order, applied or not, for the later ones to be right.
    pub fn render(&mut self, sql: &str) -> Result<Vec<Statement>> {
        let mut out = Vec::new();
        for stmt in statements(sql) {
            let Layout::Cluster {
                name,
                database,
                replica_path,
                replica_name,
            } = &self.layout
            else {
                let adds = parse_add_column(&stmt).map(|(t, c, _)| (t.to_owned(), c.to_owned()));
                out.push(Statement { sql: stmt, adds });
                continue;
            };
            if let Some(t) = parse_create(&stmt) {
                let local = format!("{}{LOCAL_SUFFIX}", t.table);
                let path = replica_path
                    .replace("{database}", database)
                    .replace("{table}", &local);
                let args = match t.engine_args.trim() {
                    "" => String::new(),
                    a => format!(", {a}"),
                };
                out.push(Statement {
                    sql: format!(
                        "CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {name}\n({})\nENGINE = Replicated{}('{path}', '{replica_name}'{args}){}",
                        t.body, t.engine, t.rest
                    ),
                    adds: None,
                });
                let body = t.body.to_owned();
                out.push(Statement {
                    sql: distributed(name, database, t.table, &body, t.shard_column),
                    adds: None,
                });
                self.tables
                    .insert(t.table.to_owned(), (body, t.shard_column.to_owned()));
                continue;
            }
            if let Some((table, column, def)) = parse_add_column(&stmt) {
                let Some((body, shard)) = self.tables.get_mut(table) else {
                    bail!("migration adds column {column} to {table}, which no earlier migration creates");
                };
                let local = format!("{table}{LOCAL_SUFFIX}");
                out.push(Statement {
                    sql: format!(
                        "ALTER TABLE {database}.{local} ON CLUSTER {name} ADD COLUMN {def}"
                    ),
                    adds: Some((local, column.to_owned())),
                });
                body.push_str(",\n    ");
                body.push_str(def);
                out.push(Statement {
                    sql: format!("DROP TABLE IF EXISTS {database}.{table} ON CLUSTER {name}"),
                    adds: None,
                });
                out.push(Statement {
                    sql: distributed(name, database, table, body, shard),
                    adds: None,
                });
                continue;
            }
            bail!(
                "migration statement not supported on a cluster (only CREATE TABLE IF NOT EXISTS … ENGINE = …MergeTree and ALTER TABLE … ADD COLUMN are): {}",
                stmt.lines().next().unwrap_or("")
            );
        }
        Ok(out)
    }
}

/// The Distributed table over `table`'s local one. A Distributed table refuses inserts into a column it
/// declares MATERIALIZED: there it is an ALIAS of the same expression (time filters still prune the shards'
/// partitions).
fn distributed(cluster: &str, database: &str, table: &str, body: &str, shard: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster}\n({})\nENGINE = Distributed({cluster}, {database}, {table}{LOCAL_SUFFIX}, cityHash64({shard}))",
        body.replace(" MATERIALIZED ", " ALIAS ")
    )
}

/// One migration file rendered alone (tests, and files that only create tables).
pub fn render(sql: &str, layout: &Layout) -> Result<Vec<Statement>> {
    Renderer::new(layout.clone()).render(sql)
}

/// `CREATE DATABASE` for a layout.
pub fn create_database(layout: &Layout, database: &str) -> String {
    format!(
        "CREATE DATABASE IF NOT EXISTS {database}{}",
        layout.on_cluster()
    )
}

struct Create<'a> {
    table: &'a str,
    body: &'a str,
    engine: &'a str,
    engine_args: &'a str,
    rest: &'a str,
    shard_column: &'a str,
}

fn parse_create(stmt: &str) -> Option<Create<'_>> {
    let after = strip_prefix_ci(stmt.trim_start(), "CREATE TABLE IF NOT EXISTS ")?;
    let name_end = after.find(|c: char| c.is_whitespace() || c == '(')?;
    let table = &after[..name_end];
    let after = after[name_end..].trim_start();
    let (body, after) = parenthesized(after)?;
    let after = after.trim_start();
    let after = strip_prefix_ci(after, "ENGINE")?.trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let engine_end = after
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(after.len());
    let engine = &after[..engine_end];
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        return None;
    }
    let after = &after[engine_end..];
    let (engine_args, rest) = match after.strip_prefix('(') {
        Some(_) => parenthesized(after)?,
        None => ("", after),
    };
    let upper = rest.to_ascii_uppercase();
    let order = upper.find("ORDER BY")? + "ORDER BY".len();
    let key = rest[order..]
        .trim_start()
        .trim_start_matches('(')
        .trim_start();
    let key_end = key
        .find(|c: char| c == ',' || c == ')' || c.is_whitespace())
        .unwrap_or(key.len());
    let shard_column = &key[..key_end];
    if shard_column.is_empty() {
        return None;
    }
    Some(Create {
        table,
        body,
        engine,
        engine_args,
        rest,
        shard_column,
    })
}

/// (table, column, the column's definition) of `ALTER TABLE t ADD COLUMN c …`.
fn parse_add_column(stmt: &str) -> Option<(&str, &str, &str)> {
    let after = strip_prefix_ci(stmt.trim_start(), "ALTER TABLE ")?;
    let name_end = after.find(char::is_whitespace)?;
    let table = &after[..name_end];
    let def = strip_prefix_ci(after[name_end..].trim_start(), "ADD COLUMN ")?.trim();
    let column = def.split_whitespace().next()?;
    Some((table, column, def))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The text inside the parenthesis `s` starts with, and what follows its matching close.
fn parenthesized(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('(') {
        return None;
    }
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[1..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// Split a migration file into statements on `;` at line ends; comments are dropped.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// One server of a cluster, as `system.clusters` lists it.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct Node {
    pub shard_num: u32,
    pub replica_num: u32,
    pub host_name: String,
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (shard {}, replica {})",
            self.host_name, self.port, self.shard_num, self.replica_num
        )
    }
}

/// The cluster's nodes as the connected server knows them; an error when it does not know the cluster.
pub async fn nodes(ch: &clickhouse::Client, cluster: &str) -> Result<Vec<Node>> {
    let nodes = nodes_query(ch, cluster)
        .fetch_all()
        .await
        .context("reading system.clusters")?;
    if nodes.is_empty() {
        bail!(
            "ClickHouse does not know cluster {cluster:?}: define it in the servers' <remote_servers>, or unset clickhouse.cluster"
        );
    }
    Ok(nodes)
}

pub(crate) fn nodes_query(ch: &clickhouse::Client, cluster: &str) -> Select<Node> {
    Select::new(
        ch.query(
            "SELECT shard_num, replica_num, host_name, toUInt16(port) AS port FROM system.clusters \
             WHERE cluster = ? ORDER BY shard_num, replica_num",
        )
        .bind(cluster),
    )
}

/// The nodes the connected server cannot query right now, each with why.
pub async fn unreachable(ch: &clickhouse::Client, nodes: &[Node]) -> Vec<(Node, String)> {
    let mut out = Vec::new();
    for n in nodes {
        let probe = probe_query(ch, n).fetch_one().await;
        if let Err(e) = probe {
            out.push((n.clone(), first_line(&e.to_string())));
        }
    }
    out
}

/// Asks the connected server to query one node.
pub(crate) fn probe_query(ch: &clickhouse::Client, n: &Node) -> Select<u8> {
    // Host names come from the server's own configuration; quoted as a string literal all the same.
    let addr = format!("{}:{}", n.host_name, n.port).replace(['\\', '\''], "");
    Select::new(ch.query(&format!(
        "SELECT toUInt8(1) FROM remote('{addr}', system, one)"
    )))
}

/// Why a statement on the cluster failed, naming the nodes that do not answer when that is the cause.
pub async fn explain(
    ch: &clickhouse::Client,
    cluster: &str,
    e: &clickhouse::error::Error,
) -> String {
    let text = first_line(&e.to_string());
    let Ok(nodes) = nodes(ch, cluster).await else {
        return text;
    };
    let down = unreachable(ch, &nodes).await;
    if down.is_empty() {
        return text;
    }
    let names: Vec<String> = down.iter().map(|(n, why)| format!("{n}: {why}")).collect();
    format!("{text}; not answering: {}", names.join("; "))
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(400).collect();
    if line.chars().count() > 400 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Layout {
        Layout::Cluster {
            name: "c1".into(),
            database: "wt".into(),
            replica_path: "/clickhouse/tables/{shard}/{database}/{table}".into(),
            replica_name: "{replica}".into(),
        }
    }

    #[test]
    fn every_shipped_migration_renders_in_both_layouts() {
        let mut single = Renderer::new(Layout::Single);
        let mut on_cluster = Renderer::new(cluster());
        for (_, name, sql) in crate::store::schema::MIGRATIONS {
            let one = single.render(sql).unwrap();
            let many = on_cluster.render(sql).unwrap();
            assert!(!one.is_empty(), "{name}");
            // A table: its local and its distributed table. A column: added to the local table, the
            // distributed one created again.
            let expected: usize = one
                .iter()
                .map(|s| if s.adds.is_some() { 3 } else { 2 })
                .sum();
            assert_eq!(many.len(), expected, "{name}");
            for s in &many {
                assert!(s.sql.contains(" ON CLUSTER c1"), "{name}: {}", s.sql);
            }
        }
        // The last Distributed items table has every column of the local one.
        let all: Vec<String> = crate::store::schema::MIGRATIONS
            .iter()
            .map(|m| m.2.to_owned())
            .collect();
        let mut r = Renderer::new(cluster());
        let last = all
            .iter()
            .flat_map(|sql| r.render(sql).unwrap())
            .filter(|s| {
                s.sql
                    .starts_with("CREATE TABLE IF NOT EXISTS wt.audit_items ON CLUSTER")
            })
            .last()
            .unwrap();
        for column in [
            "actor_source String",
            "platform_wide UInt8",
            "chain_hash String",
        ] {
            assert!(last.sql.contains(column), "{column}: {}", last.sql);
        }
    }

    #[test]
    fn a_table_becomes_replicated_local_plus_distributed_by_its_first_sort_column() {
        let sql = "CREATE TABLE IF NOT EXISTS audit_items\n(\n    id UUID,\n    occurred_at_us Int64,\n    occurred_at DateTime MATERIALIZED toDateTime(intDiv(occurred_at_us, 1000000)),\n    organization_id String,\n    version UInt64\n)\nENGINE = ReplacingMergeTree(version)\nPARTITION BY toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000)))\nORDER BY (organization_id, occurred_at_us, id);";
        let s = render(sql, &cluster()).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0]
            .sql
            .starts_with("CREATE TABLE IF NOT EXISTS wt.audit_items_local ON CLUSTER c1\n("));
        assert!(s[0].sql.contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/wt/audit_items_local', '{replica}', version)\nPARTITION BY"
        ), "{}", s[0].sql);
        assert!(s[0].sql.contains("MATERIALIZED toDateTime"));
        assert!(s[0]
            .sql
            .ends_with("ORDER BY (organization_id, occurred_at_us, id)"));
        assert!(s[1]
            .sql
            .starts_with("CREATE TABLE IF NOT EXISTS wt.audit_items ON CLUSTER c1\n("));
        assert!(s[1].sql.contains("occurred_at DateTime ALIAS toDateTime"));
        assert!(!s[1].sql.contains("MATERIALIZED"));
        assert!(s[1].sql.ends_with(
            "ENGINE = Distributed(c1, wt, audit_items_local, cityHash64(organization_id))"
        ));
        // One server: the statement as written.
        let single = render(sql, &Layout::Single).unwrap();
        assert_eq!(single[0].sql, sql.trim_end_matches(';'));
    }

    #[test]
    fn engines_without_arguments_and_single_column_keys() {
        let sql = "CREATE TABLE IF NOT EXISTS waltrail_migrations (version UInt32, name String) ENGINE = MergeTree ORDER BY version";
        let s = render(sql, &cluster()).unwrap();
        assert!(s[0].sql.contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/wt/waltrail_migrations_local', '{replica}') ORDER BY version"
        ), "{}", s[0].sql);
        assert!(s[1].sql.ends_with("cityHash64(version))"));
    }

    #[test]
    fn added_columns_go_to_the_local_table_and_recreate_the_distributed_one() {
        let mut r = Renderer::new(cluster());
        r.render("CREATE TABLE IF NOT EXISTS audit_items (id UUID, t DateTime MATERIALIZED now(), organization_id String) ENGINE = ReplacingMergeTree ORDER BY (organization_id, id)").unwrap();
        let s = r
            .render("ALTER TABLE audit_items ADD COLUMN chain_seq UInt64 DEFAULT 0;")
            .unwrap();
        assert_eq!(
            s[0].sql,
            "ALTER TABLE wt.audit_items_local ON CLUSTER c1 ADD COLUMN chain_seq UInt64 DEFAULT 0"
        );
        assert_eq!(
            s[0].adds,
            Some(("audit_items_local".into(), "chain_seq".into()))
        );
        assert_eq!(
            s[1].sql,
            "DROP TABLE IF EXISTS wt.audit_items ON CLUSTER c1"
        );
        assert_eq!(
            s[2].sql,
            "CREATE TABLE IF NOT EXISTS wt.audit_items ON CLUSTER c1\n(id UUID, t DateTime ALIAS now(), organization_id String,\n    chain_seq UInt64 DEFAULT 0)\nENGINE = Distributed(c1, wt, audit_items_local, cityHash64(organization_id))"
        );
        // A column for a table no migration created is an error, not a guess.
        assert!(r.render("ALTER TABLE other ADD COLUMN x UInt8").is_err());
        let single = render(
            "ALTER TABLE audit_items ADD COLUMN chain_seq UInt64 DEFAULT 0;",
            &Layout::Single,
        )
        .unwrap();
        assert_eq!(
            single[0].adds,
            Some(("audit_items".into(), "chain_seq".into()))
        );
    }

    #[test]
    fn anything_else_is_refused_on_a_cluster_not_guessed() {
        for sql in [
            "ALTER TABLE audit_items DROP COLUMN x",
            "CREATE TABLE t (x UInt8) ENGINE = Log",
            "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Log",
            "OPTIMIZE TABLE audit_items FINAL",
        ] {
            assert!(render(sql, &cluster()).is_err(), "{sql}");
            assert_eq!(render(sql, &Layout::Single).unwrap().len(), 1, "{sql}");
        }
    }

    #[test]
    fn each_layout_knows_its_engines() {
        for e in [
            "ReplacingMergeTree",
            "ReplicatedReplacingMergeTree",
            "SharedReplacingMergeTree",
        ] {
            assert!(Layout::Single.accepts_engine(e), "{e}");
            assert!(!cluster().accepts_engine(e), "{e}");
        }
        assert!(cluster().accepts_engine("Distributed"));
        assert!(!Layout::Single.accepts_engine("Distributed"));
        assert!(!Layout::Single.accepts_engine("MergeTree"));
    }

    #[test]
    fn splits_statements() {
        let s = statements(
            "-- c\nCREATE TABLE a (x UInt8)\nENGINE = Log;\n\nALTER TABLE a ADD COLUMN y UInt8;\n",
        );
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE TABLE a"));
    }
}

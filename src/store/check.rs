//! The store's half of `waltrail check`: ClickHouse reachable, and its schema at this version's.

use crate::config::ClickHouseConfig;
use crate::finding::Finding;

/// The ClickHouse half of `waltrail check`.
pub async fn clickhouse(cfg: &ClickHouseConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    match super::base_client(cfg)
        .query("SELECT version()")
        .fetch_one::<String>()
        .await
    {
        Ok(v) => out.push(Finding::ok(format!(
            "ClickHouse reachable at {} (version {v})",
            cfg.url
        ))),
        Err(e) => {
            out.push(Finding::fail(
                format!("ClickHouse unreachable at {}: {e}", cfg.url),
                "check clickhouse.url, user and password (WALTRAIL_CLICKHOUSE_PASSWORD), and that the server runs",
            ));
            return out;
        }
    }
    if let Some(cluster) = &cfg.cluster {
        out.extend(cluster_findings(cfg, cluster).await);
    }
    let applied = super::client(cfg)
        .query("SELECT max(version) FROM waltrail_migrations")
        .fetch_one::<u32>()
        .await;
    let latest = super::schema::MIGRATIONS
        .iter()
        .map(|m| m.0)
        .max()
        .unwrap_or(0);
    match applied {
        Ok(v) if v >= latest => out.push(Finding::ok(format!("ClickHouse schema at version {v}"))),
        _ => out.push(Finding::warn(
            "ClickHouse schema not yet at this version's",
            "waltrail run applies it, or run waltrail migrate",
        )),
    }
    out
}

/// Cluster mode: the cluster is known, every node answers, and the quorum fits the shards.
async fn cluster_findings(cfg: &ClickHouseConfig, cluster: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let base = super::base_client(cfg);
    let nodes = match super::cluster::nodes(&base, cluster).await {
        Ok(n) => n,
        Err(e) => {
            out.push(Finding::fail(
                format!("{e:#}"),
                "clickhouse.cluster must name a cluster of the servers' <remote_servers>",
            ));
            return out;
        }
    };
    let shards = nodes.iter().map(|n| n.shard_num).max().unwrap_or(0);
    let min_replicas = (1..=shards)
        .map(|s| nodes.iter().filter(|n| n.shard_num == s).count())
        .min()
        .unwrap_or(0);
    out.push(Finding::ok(format!(
        "ClickHouse cluster {cluster}: {shards} shard(s), {} node(s)",
        nodes.len()
    )));
    for (node, why) in super::cluster::unreachable(&base, &nodes).await {
        out.push(Finding::fail(
            format!("cluster {cluster}: node {node} does not answer: {why}"),
            "start it: while any shard has no replica answering, inserts wait (nothing is confirmed to Postgres) and the API answers 503 rather than a short page",
        ));
    }
    if cfg.insert_quorum as usize > min_replicas {
        out.push(Finding::fail(
            format!(
                "clickhouse.insert_quorum = {} but a shard of {cluster} has only {min_replicas} replica(s): no insert could ever be confirmed",
                cfg.insert_quorum
            ),
            format!("set clickhouse.insert_quorum to at most {min_replicas}"),
        ));
    } else if min_replicas > 1 && (cfg.insert_quorum as usize) < min_replicas {
        out.push(Finding::warn(
            format!(
                "clickhouse.insert_quorum = {} with {min_replicas} replicas per shard: an insert is confirmed when {} replica(s) hold it",
                cfg.insert_quorum,
                cfg.insert_quorum.max(1)
            ),
            format!(
                "losing that replica's disk before the others fetch the part loses those items; an asc poller reading a lagging replica can also see a later batch before an earlier one. insert_quorum = {min_replicas} rules both out, at the price of waiting for every replica"
            ),
        ));
    }
    out
}

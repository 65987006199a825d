//! The store's half of `waltrail check`: ClickHouse reachable, and its schema at this version's.

use crate::config::ClickHouseConfig;
use crate::finding::Finding;
use crate::store::sql::Select;

/// The ClickHouse half of `waltrail check`.
pub async fn clickhouse(cfg: &ClickHouseConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    match version_query(&super::base_client(cfg)).fetch_one().await {
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
    let applied = schema_version_query(&super::client(cfg)).fetch_one().await;
    let latest = super::schema::MIGRATIONS
        .iter()
        .map(|m| m.0)
        .max()
        .unwrap_or(0);
    match applied {
        Ok(v) if v >= latest => out.push(Finding::ok(format!("ClickHouse schema at version {v}"))),
        _ => {
            out.push(Finding::warn(
                "ClickHouse schema not yet at this version's",
                "waltrail run applies it, or run waltrail migrate",
            ));
            return out;
        }
    }
    match super::sources::latest(&super::client(cfg)).await {
        Ok(reports) => out.extend(sources(&reports, super::row::now_us())),
        Err(e) => out.push(Finding::warn(
            format!("cannot read the sources' heartbeats: {e:#}"),
            "check that this user may read the waltrail_sources table",
        )),
    }
    out
}

/// The server's version.
pub(crate) fn version_query(ch: &clickhouse::Client) -> Select<String> {
    Select::new(ch.query("SELECT version()"))
}

/// The newest migration applied.
pub(crate) fn schema_version_query(ch: &clickhouse::Client) -> Select<u32> {
    Select::new(ch.query("SELECT max(version) FROM waltrail_migrations"))
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

/// A pending size above this is worth a warning (as for this source's own slot in the Postgres half).
const PENDING_WARN_BYTES: u64 = 1 << 30;

/// One line per source writing into this trail (each capture process reports every few seconds): how far it
/// has confirmed, what waits, its last commit; a warning when its reports stopped or much WAL waits.
pub fn sources(reports: &[super::sources::SourceReport], now_us: i64) -> Vec<Finding> {
    use super::sources::STALE_AFTER;
    if reports.is_empty() {
        return vec![Finding::ok(
            "no source has reported yet (each waltrail run reports its source every 5 s)",
        )];
    }
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .filter(|_| us > 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "none since it started".into())
    };
    reports
        .iter()
        .map(|r| {
            let lag = format!(
                "confirmed {}, {} bytes pending, last commit {}",
                lsn(r.confirmed_lsn),
                r.pending_bytes(),
                time(r.last_commit_time_us)
            );
            let by = format!("host {}, waltrail {}", r.host, r.version);
            if r.is_stale(now_us) {
                Finding::warn(
                    format!(
                        "source {:?}: no heartbeat for {:.0} s (stale after {} s; last report: {lag}; {by})",
                        r.source_id,
                        r.age_s(now_us),
                        STALE_AFTER.as_secs()
                    ),
                    "is its waltrail run running, and reaching Postgres and ClickHouse? Its log says why not. A \
                     source retired for good: ALTER TABLE waltrail_sources DELETE WHERE source_id = '…'",
                )
            } else if r.pending_bytes() > PENDING_WARN_BYTES {
                Finding::warn(
                    format!(
                        "source {:?}: {lag}; heartbeat {:.0} s ago ({by})",
                        r.source_id,
                        r.age_s(now_us)
                    ),
                    "more than 1 GiB of its WAL is not stored yet: see waltrail check with that source's config, \
                     and its waltrail_slot_* metrics",
                )
            } else {
                Finding::ok(format!(
                    "source {:?}: {lag}; heartbeat {:.0} s ago ({by})",
                    r.source_id,
                    r.age_s(now_us)
                ))
            }
        })
        .collect()
}

/// A position as Postgres writes it.
fn lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::super::sources::SourceReport;

    #[test]
    fn each_source_is_listed_and_a_silent_one_warned() {
        let r = |id: &str, age_s: i64, pending: u64| SourceReport {
            source_id: id.into(),
            confirmed_lsn: 0x1_0000_0010,
            server_lsn: 0x1_0000_0010 + pending,
            last_commit_time_us: 1_700_000_000_000_000,
            reported_at_us: (1_800_000_000_000_000 - age_s * 1_000_000) as u64,
            host: "h1".into(),
            version: "0.1.0".into(),
            confirm_bound_lsn: 0,
            redaction_baseline: String::new(),
            pending_gaps: String::new(),
            publication_stamp: String::new(),
        };
        let now = 1_800_000_000_000_000;
        let f = super::sources(&[r("a", 3, 0), r("b", 61, 5), r("c", 1, 2 << 30)], now);
        use crate::finding::Status;
        assert_eq!(
            f.iter().map(|f| f.status).collect::<Vec<_>>(),
            [Status::Ok, Status::Warn, Status::Warn]
        );
        assert!(
            f[0].what.contains("\"a\": confirmed 1/10, 0 bytes pending"),
            "{}",
            f[0].what
        );
        assert!(f[1].what.contains("no heartbeat for 61 s"), "{}", f[1].what);
        assert!(
            f[2].what.contains("2147483648 bytes pending"),
            "{}",
            f[2].what
        );
    }
}

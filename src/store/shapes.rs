//! Every statement waltrail sends to ClickHouse besides the schema's (which `schema::all_statements`
//! renders), built by the functions the code runs them through, with representative parameters for each
//! of their branches, and rendered without a server. `waltrail sql-shapes` prints them and
//! `scripts/check-current-clickhouse` runs them on a current ClickHouse: a change to a query is checked
//! there as the code sends it, never as a copy that could drift from it.

use serde::Serialize;
use uuid::Uuid;

use crate::config::ClickHouseConfig;
use crate::store::cluster::{self, Layout, Node};
use crate::store::query::{
    self, AscCursor, Cursor, Filters, Order, Position, Scope, SourcePosition,
};
use crate::store::row::{now_us, CheckpointRow, ItemRow};
use crate::store::sources::{self, SourceReport};
use crate::store::sql;
use crate::store::{check, retention, schema, writer};
use crate::vocab::action;

/// What a statement can be held to on one in-process server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// Run it.
    Run,
    /// Parse it only: it needs a cluster (`ON CLUSTER`) or another node to talk to.
    Parse,
}

/// One statement as waltrail sends it.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub name: String,
    /// As the code sends it, bound values in place.
    pub sql: String,
    pub check: Check,
    /// An insert's body, RowBinary in hex, exactly as the code sends it after the statement: for the items,
    /// which waltrail encodes itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// An insert's rows as JSONEachRow (one JSON object a line), where the client library encodes the
    /// body (out of reach): the checker sends the same statement with these rows (the same structs,
    /// serialized by serde) in that format instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
}

/// Representative values, shared by the rows written and the queries that read them back (so the queries
/// find data, and the conditions that hold are exercised as well as those that do not).
const ORG: &str = "org_1";
const PROJECT: &str = "proj_1";
const SOURCE_A: &str = "src_a";
const SOURCE_B: &str = "src_b";
const TABLE: &str = "public.api_keys";
const RETENTION_DAYS: u32 = 30;
const HOUR_US: i64 = 3_600 * 1_000_000;
/// An item committed on this day is past retention: its partition is the one dropped.
const OLD_DAY: u32 = 20200101;
const OLD_US: i64 = 1_577_880_000_000_000; // 2020-01-01 12:00 UTC

/// Every shape for the configured layout, in an order that can be run as is: the writes first (their rows
/// are what the reads find), the partition drop last.
pub fn all(cfg: &ClickHouseConfig) -> Vec<Shape> {
    let ch = crate::store::client(cfg);
    let layout = Layout::of(cfg);
    let now = now_us();
    let run = |name: &str, sql: String| Shape {
        name: name.into(),
        sql,
        check: Check::Run,
        body_hex: None,
        rows: None,
    };

    // Writes: the migrations' bookkeeping (one of `migrate`'s statements), then rows of each table.
    let mut out = vec![run(
        "record an applied migration",
        sql::sql(&schema::record_query(&ch, 1, schema::MIGRATIONS[0].1)),
    )];
    let items = [
        item(1, SOURCE_A, ORG, PROJECT, now - 60_000_000, 10, 0),
        item(2, SOURCE_A, ORG, "", now - 30_000_000, 11, 0),
        item(3, SOURCE_B, ORG, PROJECT, now - 10_000_000, 7, 1),
        item(4, SOURCE_B, "", "", now - 5_000_000, 8, 0),
        item(5, SOURCE_A, ORG, PROJECT, OLD_US, 1, 0),
    ];
    out.extend([
        Shape {
            name: "insert items".into(),
            sql: writer::items_insert_sql(),
            check: Check::Run,
            body_hex: Some(items_body(&items)),
            rows: None,
        },
        Shape {
            name: "insert checkpoints".into(),
            sql: sql::insert_sql::<CheckpointRow>(writer::CHECKPOINTS_TABLE),
            check: Check::Run,
            body_hex: None,
            rows: Some(json_rows(&[checkpoint()])),
        },
        Shape {
            name: "insert rosters".into(),
            sql: sql::insert_sql::<crate::store::row::RosterRow>(writer::ROSTERS_TABLE),
            check: Check::Run,
            body_hex: None,
            rows: Some(json_rows(&[roster()])),
        },
        Shape {
            name: "insert a source's heartbeat".into(),
            sql: sql::insert_sql::<SourceReport>(sources::TABLE),
            check: Check::Run,
            body_hex: None,
            rows: Some(json_rows(&[heartbeat(now)])),
        },
    ]);

    // Scopes: a member limited to projects (with and without the organization's own items), an admin.
    let member = Scope {
        org_id: ORG.into(),
        projects: Some(vec![PROJECT.into(), "proj_2".into()]),
        include_org_level: true,
    };
    let member_projects_only = Scope {
        include_org_level: false,
        ..member.clone()
    };
    let admin = Scope {
        org_id: ORG.into(),
        projects: None,
        include_org_level: true,
    };
    let every_filter = Filters {
        actions: vec![action::CREATED.into(), action::UPDATED.into()],
        resource_types: vec!["RESOURCE_TYPE_API_KEY".into()],
        sources: vec!["AUDIT_SOURCE_API".into()],
        principal_types: vec!["USER".into()],
        principal_ids: vec!["acct_1".into()],
        users: vec!["alice@example.com".into()],
        project_ids: vec![PROJECT.into()],
        resource_ids: vec!["k1".into()],
        changed_fields: vec!["name".into()],
        actor_sources: vec!["CONTEXT_SESSION".into()],
        since_us: Some(now - 7 * 24 * HOUR_US),
        until_us: Some(now + HOUR_US),
    };
    let none = Filters::default();
    let desc_cursor = Cursor::Desc {
        occurred_at_us: now - 20_000_000,
        id: Uuid::from_u128(2),
    };
    let position = |lsn: u64, seq: u32, id: u128| Position {
        commit_lsn: lsn,
        seq,
        id: Uuid::from_u128(id),
    };
    let source = |id: &str, at: Position| SourcePosition {
        source_id: id.into(),
        at,
        ingested_at_us: now - HOUR_US,
    };
    // A cursor of a trail written by two sources, bounding the sources it does not list by time.
    let asc_two_sources = AscCursor {
        sources: vec![
            source(SOURCE_A, position(10, 0, 1)),
            source(SOURCE_B, position(7, 0, 3)),
        ],
        others_since_us: Some(now - 2 * HOUR_US),
        others_after: None,
    };
    // Sources listed and no bound for the others: no overall lower bound on the ingestion time.
    let asc_sources_only = AscCursor {
        others_since_us: None,
        ..asc_two_sources.clone()
    };
    // A v1/v2 cursor: one position for every source.
    let asc_old = AscCursor {
        sources: Vec::new(),
        others_since_us: Some(now - 2 * HOUR_US),
        others_after: Some(position(10, 0, 1)),
    };
    let keys = |scope: &Scope, filters: &Filters, order, cursor: Option<&Cursor>, since| {
        query::list_keys_query(
            &ch,
            RETENTION_DAYS,
            scope,
            filters,
            order,
            cursor,
            50,
            since,
        )
        .sql()
    };
    let asc = |c: &AscCursor| Cursor::Asc(c.clone());
    let reads: Vec<(&str, String)> = vec![
        // A page: its keys (newest first in widening windows, then over the whole retention window; or
        // in ingestion order after a cursor of each kind), then its rows.
        (
            "page keys, newest first, in a window, every filter, member scope, after a cursor",
            keys(
                &member,
                &every_filter,
                Order::Desc,
                Some(&desc_cursor),
                Some(now - HOUR_US),
            ),
        ),
        (
            "page keys, newest first, whole retention window, admin scope",
            keys(&admin, &none, Order::Desc, None, None),
        ),
        (
            "page keys, newest first, member scope without the organization's own items",
            keys(
                &member_projects_only,
                &none,
                Order::Desc,
                None,
                Some(now - HOUR_US),
            ),
        ),
        (
            "page keys, ingestion order, first page",
            keys(&admin, &none, Order::Asc, None, None),
        ),
        (
            "page keys, ingestion order, after a cursor of two sources and a bound for the others",
            keys(
                &member,
                &every_filter,
                Order::Asc,
                Some(&asc(&asc_two_sources)),
                None,
            ),
        ),
        (
            "page keys, ingestion order, after a cursor of two sources and no bound for the others",
            keys(
                &admin,
                &none,
                Order::Asc,
                Some(&asc(&asc_sources_only)),
                None,
            ),
        ),
        (
            "page keys, ingestion order, after a v1/v2 cursor",
            keys(&admin, &none, Order::Asc, Some(&asc(&asc_old)), None),
        ),
        (
            "page keys, ingestion order, after a cursor starting now",
            keys(
                &admin,
                &none,
                Order::Asc,
                Some(&asc(&AscCursor::starting_now())),
                None,
            ),
        ),
        ("page rows, newest first", page_rows(&ch, now, Order::Desc)),
        (
            "page rows, ingestion order",
            page_rows(&ch, now, Order::Asc),
        ),
        (
            "poll cursor",
            query::poll_cursor_query(&ch, RETENTION_DAYS, &member, &every_filter, now).sql(),
        ),
        (
            "one item",
            query::get_query(&ch, RETENTION_DAYS, &member, Uuid::from_u128(1)).sql(),
        ),
        (
            "a transaction's items",
            query::transaction_query(&ch, RETENTION_DAYS, &admin, Uuid::from_u128(101)).sql(),
        ),
        (
            "facets, member scope",
            query::facets_query(&ch, RETENTION_DAYS, &member).sql(),
        ),
        (
            "facets, admin scope",
            query::facets_query(&ch, RETENTION_DAYS, &admin).sql(),
        ),
        (
            "export, first day (open above)",
            query::export_day_query(
                &ch,
                RETENTION_DAYS,
                &member,
                &every_filter,
                now - HOUR_US,
                true,
            )
            .sql(),
        ),
        (
            "export, an earlier day",
            query::export_day_query(
                &ch,
                RETENTION_DAYS,
                &admin,
                &none,
                now - 25 * HOUR_US,
                false,
            )
            .sql(),
        ),
        (
            "export, items committed before its days but stored within retention",
            query::export_older_query(&ch, RETENTION_DAYS, &admin, &none, now - 30 * 24 * HOUR_US)
                .sql(),
        ),
        (
            "log, newest items of every organization",
            query::tail_query(&ch, RETENTION_DAYS, None, None, 20).sql(),
        ),
        (
            "log, one organization after a cursor",
            query::tail_query(&ch, RETENTION_DAYS, Some(ORG), Some(&asc_two_sources), 1000).sql(),
        ),
        (
            "log --follow start, every organization",
            query::follow_cursor_query(&ch, RETENTION_DAYS, None).sql(),
        ),
        (
            "log --follow start, one organization",
            query::follow_cursor_query(&ch, RETENTION_DAYS, Some(ORG)).sql(),
        ),
        (
            "a source's stored history",
            query::history_query(&ch, SOURCE_A, None).sql(),
        ),
        (
            "a table's stored history",
            query::history_query(&ch, SOURCE_A, Some(TABLE)).sql(),
        ),
        (
            "chain heads",
            query::chain_heads_query(&ch, SOURCE_A, 100).sql(),
        ),
        (
            "where the items a replay finds stored are",
            query::stored_sizes_query(&ch, SOURCE_A, (100, 3), 200, 5000).sql(),
        ),
        (
            "items a replay finds stored, one page",
            query::stored_between_query(&ch, SOURCE_A, (100, 3), Some((150, 7)), 200).sql(),
        ),
        (
            "items a replay finds stored, the last page",
            query::stored_between_query(&ch, SOURCE_A, (100, 3), None, 200).sql(),
        ),
        (
            "resources' last scopes, for deletes that carried their key alone",
            query::last_scopes_query(
                &ch,
                SOURCE_A,
                "public.api_keys",
                &["k1".to_owned(), "k2".to_owned()],
                (100, 2),
            )
            .sql(),
        ),
        (
            "chains' last checkpoints",
            query::checkpoint_heads_query(&ch, SOURCE_A, 100).sql(),
        ),
        (
            "an organization's chain",
            query::chain_rows_query(&ch, ORG, None, None).sql(),
        ),
        (
            "the platform chain between times",
            query::chain_rows_query(&ch, "", Some(now - HOUR_US), Some(now)).sql(),
        ),
        (
            "the items at the chains' last checkpoints",
            query::hashes_at_query(&ch, SOURCE_A, &["org_1:2".to_owned(), ":1".to_owned()]).sql(),
        ),
        (
            "each source's checkpoint naming its highest roster",
            query::roster_claims_query(&ch, Some(now - HOUR_US), None).sql(),
        ),
        (
            "a source's checkpoint naming its highest roster",
            query::source_roster_claim_query(&ch, SOURCE_A, 100).sql(),
        ),
        (
            "a source's last recorded gap",
            query::last_gap_query(&ch, SOURCE_A).sql(),
        ),
        (
            "each source's highest roster",
            query::roster_max_query(&ch).sql(),
        ),
        (
            "a source's last roster",
            query::last_roster_query(&ch, SOURCE_A, 100).sql(),
        ),
        (
            "the rosters of a range, headers",
            query::roster_headers_query(&ch, Some(now - HOUR_US), None).sql(),
        ),
        ("one roster", query::roster_query(&ch, SOURCE_A, 1).sql()),
        (
            "the sources that signed in a range",
            query::roster_sources_query(&ch, Some(now - HOUR_US), Some(now)).sql(),
        ),
        (
            "a source's positions of a chain between two",
            query::chain_rows_between_query(&ch, ORG, SOURCE_A, (1, 3)).sql(),
        ),
        (
            "a chain's checkpoints",
            query::checkpoints_query(&ch, ORG).sql(),
        ),
        (
            "an organization's first item outside its chain",
            query::unchained_query(&ch, ORG, Some(now - HOUR_US), None).sql(),
        ),
        (
            "whether the platform chain holds items of no organization",
            query::unscoped_items_query(&ch).sql(),
        ),
        (
            "sources' latest heartbeats",
            sources::latest_query(&ch).sql(),
        ),
        (
            "a source's checkpoints (catching up the external copy)",
            query::source_checkpoints_query(&ch, SOURCE_A).sql(),
        ),
        (
            "how far a source may have confirmed its slot",
            sources::confirm_bound_query(&ch, SOURCE_A).sql(),
        ),
        (
            "what redaction looked like at a source's last start",
            sources::redaction_baseline_query(&ch, SOURCE_A).sql(),
        ),
        (
            "the gaps a source's latest report says are pending",
            sources::pending_gaps_query(&ch, SOURCE_A).sql(),
        ),
        (
            "where a source's checkpoint signing was last turned off",
            query::last_signing_gap_query(&ch, SOURCE_A, 7).sql(),
        ),
        (
            "verify: where each source's checkpoint signing was last turned off",
            query::signing_gaps_query(&ch).sql(),
        ),
        (
            "which of some items the store holds",
            query::stored_ids_query(
                &ch,
                SOURCE_A,
                &["00000000-0000-0000-0000-000000000001".to_owned()],
            )
            .sql(),
        ),
        (
            "each table's latest gap record",
            query::last_table_gaps_query(&ch, SOURCE_A, ["no longer mapped", "is mapped again"])
                .sql(),
        ),
        (
            "a start: the rows left of an expired day",
            query::same_day_rows_query(&ch, 1_700_000_000_000_000).sql(),
        ),
        (
            "the tables a source's items are of",
            query::tables_in_trail_query(&ch, SOURCE_A).sql(),
        ),
        (
            "check: a source's checkpoints and the keys that signed them",
            query::checkpoint_keys_query(&ch, SOURCE_A).sql(),
        ),
        ("check: server version", check::version_query(&ch).sql()),
        (
            "check: schema version",
            check::schema_version_query(&ch).sql(),
        ),
        (
            "migrate: applied migrations",
            schema::applied_query(&ch).sql(),
        ),
        (
            "migrate: the items table's engine",
            schema::engine_query(&ch, &cfg.database).sql(),
        ),
        (
            "migrate: does a column exist",
            schema::column_exists_query(&ch, &cfg.database, schema::ITEMS_TABLE, "chain_seq").sql(),
        ),
        (
            "cluster: nodes",
            cluster::nodes_query(&ch, layout.cluster().unwrap_or("c1")).sql(),
        ),
        (
            "retention: expired days",
            retention::expired_days_query(&ch, now - RETENTION_DAYS as i64 * 24 * HOUR_US).sql(),
        ),
        (
            "retention: chains a day would cut",
            sql::sql(&retention::cuts_chains_query(&ch, OLD_DAY)),
        ),
    ];
    out.extend(reads.into_iter().map(|(name, sql)| run(name, sql)));
    let node = Node {
        shard_num: 1,
        replica_num: 1,
        host_name: "ch1".into(),
        port: 9000,
    };
    out.push(Shape {
        name: "cluster: probe a node".into(),
        sql: cluster::probe_query(&ch, &node).sql(),
        check: Check::Parse,
        body_hex: None,
        rows: None,
    });
    out.push(Shape {
        name: "retention: drop a day".into(),
        sql: sql::sql(&retention::drop_partition_query(&ch, &layout, OLD_DAY)),
        check: match layout {
            Layout::Single => Check::Run,
            Layout::Cluster { .. } => Check::Parse,
        },
        body_hex: None,
        rows: None,
    });
    out
}

/// A page's second step for the seeded items 1 to 3.
fn page_rows(ch: &clickhouse::Client, now: i64, order: Order) -> String {
    let ids = (1..=3).map(|i| Uuid::from_u128(i).to_string()).collect();
    query::list_rows_query(ch, ORG, now - HOUR_US, now, ids, order).sql()
}

/// The items as the pipeline encodes them for an insert.
fn items_body(items: &[ItemRow]) -> String {
    let mut enc = writer::EncodedRows::default();
    for r in items {
        enc.push(r);
    }
    crate::audit::attribution::seal::hex(&enc.take().0)
}

fn json_rows<T: Serialize>(rows: &[T]) -> String {
    rows.iter()
        .map(|r| serde_json::to_string(r).expect("a row serializes"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A stored item; organization '' is a platform-wide one.
fn item(
    n: u128,
    source_id: &str,
    org: &str,
    project: &str,
    occurred_at_us: i64,
    commit_lsn: u64,
    seq: u32,
) -> ItemRow {
    let ingested_at_us = occurred_at_us + 1_000;
    ItemRow {
        id: Uuid::from_u128(n),
        event_id: Uuid::from_u128(100 + n),
        source_id: source_id.into(),
        occurred_at_us,
        ingested_at_us,
        commit_lsn,
        xid: 7,
        seq,
        action: action::CREATED.into(),
        source: "AUDIT_SOURCE_API".into(),
        principal_id: "acct_1".into(),
        principal_type: "USER".into(),
        display_name: "Alice".into(),
        actor_email: "alice@example.com".into(),
        on_behalf_of_id: String::new(),
        on_behalf_of_display: String::new(),
        auth_method: "API_KEY".into(),
        key_id: "key_1".into(),
        session_id: "sess_1".into(),
        request_id: "req_1".into(),
        run_id: String::new(),
        client_ip: "192.0.2.1".into(),
        user_agent: "curl/8".into(),
        organization_id: org.into(),
        project_id: project.into(),
        resource_type: "RESOURCE_TYPE_API_KEY".into(),
        resource_id: "k1".into(),
        resource_display: "prod-key-1".into(),
        changed_fields: vec!["name".into()],
        diff: r#"{"name":{"before":"a","after":"b"}}"#.into(),
        table_name: TABLE.into(),
        summary: "Alice created API key \"prod-key-1\"".into(),
        actor_source: "CONTEXT_SESSION".into(),
        context_status: "SIGNED".into(),
        platform_wide: u8::from(org.is_empty()),
        chain_seq: n as u64,
        chain_prev: String::new(),
        chain_hash: format!("h{n}"),
        version: u64::MAX - ingested_at_us as u64,
    }
}

fn checkpoint() -> CheckpointRow {
    CheckpointRow {
        source_id: SOURCE_A.into(),
        organization_id: ORG.into(),
        chain_seq: 2,
        head_hash: "h2".into(),
        commit_lsn: 11,
        item_id: Uuid::from_u128(2).to_string(),
        commit_time_us: now_us(),
        key_id: "ed25519:k1".into(),
        signature: "00".into(),
        stored_at_us: now_us() as u64,
        format: 2,
        opening: 1,
        opens_after_us: now_us() - 86_400_000_000,
        signed_from: 1,
        every_items: 1000,
        roster_seq: 1,
    }
}

fn roster() -> crate::store::row::RosterRow {
    crate::store::row::RosterRow {
        source_id: SOURCE_A.into(),
        roster_seq: 1,
        commit_lsn: 11,
        commit_time_us: now_us(),
        chains: r#"[{"chain":"org1","seq":2,"newest_us":1}]"#.into(),
        chains_sha256: "00".into(),
        full: 1,
        key_id: "k1".into(),
        signature: "00".into(),
        stored_at_us: now_us() as u64,
    }
}

fn heartbeat(now: i64) -> SourceReport {
    SourceReport {
        source_id: SOURCE_A.into(),
        confirmed_lsn: 11,
        server_lsn: 12,
        last_commit_time_us: now,
        reported_at_us: now as u64,
        host: "h1".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        confirm_bound_lsn: 12,
        redaction_baseline: r#"{"v":1,"tables":{}}"#.into(),
        pending_gaps: String::new(),
        publication_stamp: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> ClickHouseConfig {
        toml::from_str(toml_text).expect("a ClickHouse config")
    }

    /// Every `fn …_query(` the store defines (the builders of what it sends), by name.
    fn builders() -> Vec<String> {
        let files = [
            include_str!("query.rs"),
            include_str!("retention.rs"),
            include_str!("sources.rs"),
            include_str!("check.rs"),
            include_str!("schema.rs"),
            include_str!("cluster.rs"),
        ];
        let mut out = Vec::new();
        for f in files {
            for part in f.split("fn ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name.ends_with("_query") && part[name.len()..].starts_with('(') {
                    out.push(name);
                }
            }
        }
        out
    }

    #[test]
    fn every_builder_is_rendered_with_every_value_bound() {
        let here = include_str!("shapes.rs");
        let (code, _tests) = here.split_once("#[cfg(test)]").unwrap();
        let builders = builders();
        assert_eq!(builders.len(), 53, "{builders:?}");
        for b in &builders {
            assert!(
                code.contains(&format!("{b}(")),
                "{b} builds a statement the shapes do not render"
            );
        }
        for text in [
            "database = \"w\"",
            "database = \"w\"\ncluster = \"c1\"\ninsert_quorum = 2",
        ] {
            let shapes = all(&cfg(text));
            assert!(shapes.len() > builders.len(), "{}", shapes.len());
            let mut names = std::collections::HashSet::new();
            for s in &shapes {
                assert!(names.insert(s.name.clone()), "two shapes named {}", s.name);
                assert!(
                    !s.sql.contains('?'),
                    "{}: a value left unbound: {}",
                    s.name,
                    s.sql
                );
                assert!(!s.sql.contains("invalid SQL"), "{}: {}", s.name, s.sql);
                assert!(!s.sql.trim().is_empty(), "{}", s.name);
            }
            // Every page row and chain row lists the row's columns, as the client expands `?fields`.
            let rows = shapes.iter().find(|s| s.name == "one item").unwrap();
            assert!(
                rows.sql
                    .starts_with("SELECT `id`,`event_id`,`source_id`,`occurred_at_us`,"),
                "{}",
                rows.sql
            );
            assert!(
                rows.sql
                    .contains(",`version` FROM audit_items WHERE organization_id IN ('org_1', '')"),
                "{}",
                rows.sql
            );
        }
    }

    #[test]
    fn the_cluster_drops_a_day_on_every_node_and_the_rest_is_the_same() {
        let single = all(&cfg("database = \"w\""));
        let cluster = all(&cfg("database = \"w\"\ncluster = \"c1\""));
        assert_eq!(single.len(), cluster.len());
        let drop = cluster.last().unwrap();
        assert_eq!(
            drop.sql,
            "ALTER TABLE w.audit_items_local ON CLUSTER c1 DROP PARTITION 20200101"
        );
        assert_eq!(drop.check, Check::Parse);
        assert_eq!(
            single.last().unwrap().sql,
            "ALTER TABLE audit_items DROP PARTITION 20200101"
        );
        let writes: Vec<&Shape> = single
            .iter()
            .filter(|s| s.rows.is_some() || s.body_hex.is_some())
            .collect();
        assert_eq!(writes.len(), 4);
        // The items' body is what the pipeline's encoder writes: five rows of 39 columns at least.
        let body = writes[0].body_hex.as_deref().unwrap();
        assert!(body.len() > 2 * 5 * 39, "{}", body.len());
        assert!(writes
            .iter()
            .all(|s| s.sql.starts_with("INSERT INTO ") && s.sql.ends_with(") FORMAT RowBinary")));
    }
}

//! Read queries for the API: filtered, scoped, deduplicated, keyset-paged. Every value from a request is
//! bound as a parameter (escaped by the client), never spliced into the SQL text.

use anyhow::{bail, Result};
use base64::Engine;
use serde::Deserialize;
use uuid::Uuid;

use crate::store::row::now_us;

/// Rows are read with the same struct they are written with.
pub use crate::store::row::ItemRow as ReadRow;

/// Which items a caller may see.
#[derive(Debug, Clone)]
pub struct Scope {
    pub org_id: String,
    /// `None`: the whole organization. `Some`: only these projects (and org-level items if allowed).
    pub projects: Option<Vec<String>>,
    pub include_org_level: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub actions: Vec<String>,
    pub resource_types: Vec<String>,
    pub sources: Vec<String>,
    pub principal_types: Vec<String>,
    pub principal_ids: Vec<String>,
    pub users: Vec<String>,
    pub project_ids: Vec<String>,
    pub resource_ids: Vec<String>,
    pub changed_fields: Vec<String>,
    pub actor_sources: Vec<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first by commit time.
    Desc,
    /// Ingestion order (commit LSN, position): what a poller walks.
    Asc,
}

/// A position in a listing. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Desc {
        occurred_at_us: i64,
        id: Uuid,
    },
    Asc {
        commit_lsn: u64,
        seq: u32,
        id: Uuid,
        /// When the position's item was stored: the asc scan looks back from here. (Not its commit time,
        /// which a replication origin can set days back, and which would hide that item from the scan.)
        ingested_at_us: i64,
    },
}

/// Items of higher commit LSN are stored after those of lower LSN, but ingestion times are waltrail's wall
/// clock, which can step back; the asc scan looks back this far from the cursor's ingestion time.
const ASC_LOOKBACK_US: i64 = 3_600 * 1_000_000;

/// Windows (below a newest-first page's top) in which its keys are looked for first: an hour, a day, a week.
const DESC_WINDOWS_US: &[i64] = &[
    3_600 * 1_000_000,
    86_400 * 1_000_000,
    7 * 86_400 * 1_000_000,
];

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = match self {
            Cursor::Desc { occurred_at_us, id } => format!("v1:d:{occurred_at_us}:{id}"),
            Cursor::Asc {
                commit_lsn,
                seq,
                id,
                ingested_at_us,
            } => format!("v2:a:{commit_lsn}:{seq}:{id}:{ingested_at_us}"),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Result<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| anyhow::anyhow!("not a cursor this API issued"))?;
        let raw =
            String::from_utf8(raw).map_err(|_| anyhow::anyhow!("not a cursor this API issued"))?;
        let parts: Vec<&str> = raw.split(':').collect();
        let bad = || anyhow::anyhow!("not a cursor this API issued");
        match parts.as_slice() {
            ["v1", "d", t, id] => Ok(Cursor::Desc {
                occurred_at_us: t.parse().map_err(|_| bad())?,
                id: id.parse().map_err(|_| bad())?,
            }),
            // v1 carried the commit time; it is never later than the ingestion time, so the scan only
            // looks back further.
            ["v1" | "v2", "a", lsn, seq, id, t] => Ok(Cursor::Asc {
                commit_lsn: lsn.parse().map_err(|_| bad())?,
                seq: seq.parse().map_err(|_| bad())?,
                id: id.parse().map_err(|_| bad())?,
                ingested_at_us: t.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }

    pub fn order(&self) -> Order {
        match self {
            Cursor::Desc { .. } => Order::Desc,
            Cursor::Asc { .. } => Order::Asc,
        }
    }
}

enum Bind {
    S(String),
    A(Vec<String>),
    I(i64),
    U(u64),
}

/// A WHERE clause under construction, with its parameters in order.
struct Where {
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Where {
    fn new(scope: &Scope, retention_days: u32) -> Where {
        // Platform-wide items (organization '') are every organization's; the IN keeps the primary key usable.
        let cutoff = retention_cutoff_us(retention_days);
        let mut w = Where {
            clauses: vec![
                "organization_id IN (?, '')".into(),
                "(organization_id = ? OR platform_wide = 1)".into(),
                RETAINED.into(),
            ],
            binds: vec![
                Bind::S(scope.org_id.clone()),
                Bind::S(scope.org_id.clone()),
                Bind::I(cutoff),
                Bind::I(cutoff),
            ],
        };
        if let Some(projects) = &scope.projects {
            if scope.include_org_level {
                w.push(
                    "(has(?, project_id) OR project_id = '')",
                    Bind::A(projects.clone()),
                );
            } else {
                w.push("has(?, project_id)", Bind::A(projects.clone()));
            }
        }
        w
    }

    fn push(&mut self, clause: &str, bind: Bind) {
        self.clauses.push(clause.into());
        self.binds.push(bind);
    }

    fn any(&mut self, column: &str, values: &[String]) {
        if !values.is_empty() {
            self.push(&format!("has(?, {column})"), Bind::A(values.to_vec()));
        }
    }

    fn filters(&mut self, f: &Filters) {
        self.any("action", &f.actions);
        self.any("resource_type", &f.resource_types);
        self.any("source", &f.sources);
        self.any("principal_type", &f.principal_types);
        self.any("principal_id", &f.principal_ids);
        self.any("actor_email", &f.users);
        self.any("project_id", &f.project_ids);
        self.any("resource_id", &f.resource_ids);
        self.any("actor_source", &f.actor_sources);
        if !f.changed_fields.is_empty() {
            self.push(
                "hasAny(changed_fields, ?)",
                Bind::A(f.changed_fields.clone()),
            );
        }
        if let Some(s) = f.since_us {
            self.push("occurred_at_us >= ?", Bind::I(s));
        }
        if let Some(u) = f.until_us {
            self.push("occurred_at_us < ?", Bind::I(u));
        }
    }

    fn cursor(&mut self, c: &Cursor) {
        match *c {
            Cursor::Desc { occurred_at_us, id } => {
                self.clauses
                    .push("(occurred_at_us < ? OR (occurred_at_us = ? AND id < toUUID(?)))".into());
                self.binds.push(Bind::I(occurred_at_us));
                self.binds.push(Bind::I(occurred_at_us));
                self.binds.push(Bind::S(id.to_string()));
            }
            Cursor::Asc {
                commit_lsn,
                seq,
                id,
                ingested_at_us,
            } => {
                self.clauses.push(
                    "(commit_lsn > ? OR (commit_lsn = ? AND (seq > ? OR (seq = ? AND id > toUUID(?)))))".into(),
                );
                self.binds.push(Bind::U(commit_lsn));
                self.binds.push(Bind::U(commit_lsn));
                self.binds.push(Bind::U(seq as u64));
                self.binds.push(Bind::U(seq as u64));
                self.binds.push(Bind::S(id.to_string()));
                self.push(
                    "ingested_at_us >= ?",
                    Bind::I(ingested_at_us.saturating_sub(ASC_LOOKBACK_US)),
                );
            }
        }
    }

    fn sql(&self) -> String {
        self.clauses.join(" AND ")
    }

    fn apply(self, mut q: clickhouse::query::Query) -> clickhouse::query::Query {
        for b in self.binds {
            q = match b {
                Bind::S(s) => q.bind(s),
                Bind::A(a) => q.bind(a),
                Bind::I(i) => q.bind(i),
                Bind::U(u) => q.bind(u),
            };
        }
        q
    }
}

/// An item is kept for the retention window from its commit time, and never less from when it was stored:
/// a transaction applied through a replication origin can carry a commit time days old.
const RETAINED: &str = "(occurred_at_us >= ? OR ingested_at_us >= ?)";

pub fn retention_cutoff_us(days: u32) -> i64 {
    now_us() - days as i64 * 86_400 * 1_000_000
}

fn order_sql(order: Order) -> &'static str {
    match order {
        Order::Desc => "ORDER BY occurred_at_us DESC, id DESC",
        Order::Asc => "ORDER BY commit_lsn ASC, seq ASC, id ASC",
    }
}

pub struct Page {
    pub rows: Vec<ReadRow>,
    pub has_more: bool,
    /// When asked for: an asc cursor at the newest matching item, for pollers (see [`poll_cursor`]).
    pub poll: Option<Cursor>,
}

/// One page. Replayed copies of an item are collapsed (`LIMIT 1 BY id`). With `want_poll` (a desc page)
/// the poll cursor is looked up too, at the same time as the page's rows.
#[allow(clippy::too_many_arguments)]
pub async fn list(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    order: Order,
    cursor: Option<&Cursor>,
    limit: u32,
    want_poll: bool,
) -> Result<Page> {
    if let Some(c) = cursor {
        if c.order() != order {
            bail!("cursor belongs to the other order");
        }
    }
    // Two steps: find the page's ids reading only the narrow columns the conditions need, then read the
    // page's whole rows from the few granules of its time range. Reading every column of every candidate
    // (diffs are the wide part) is what made a first page slow on a large organization.
    #[derive(clickhouse::Row, Deserialize)]
    struct Key {
        #[serde(with = "clickhouse::serde::uuid")]
        id: Uuid,
        occurred_at_us: i64,
    }
    let keys_since = |since: Option<i64>| {
        let mut w = Where::new(scope, retention_days);
        w.filters(filters);
        if let Some(c) = cursor {
            w.cursor(c);
        }
        if let Some(t) = since {
            w.push("occurred_at_us >= ?", Bind::I(t));
        }
        let sql = format!(
            "SELECT id, occurred_at_us FROM audit_items WHERE {} {} LIMIT 1 BY id LIMIT {}",
            w.sql(),
            order_sql(order),
            limit as u64 + 1
        );
        w.apply(ch.query(&sql)).fetch_all::<Key>()
    };
    // Newest first, the keys are looked for in widening windows below the page's top (the cursor, the
    // `until` filter, or now): a page found within the last hour never sorts the keys of the whole
    // retention window, which ClickHouse 18.16 otherwise does (it cannot read `LIMIT 1 BY` in key order).
    // A window is enough once it holds more than a page; otherwise the next, wider one is tried.
    let mut found = None;
    if order == Order::Desc {
        let top = match cursor {
            Some(Cursor::Desc { occurred_at_us, .. }) => *occurred_at_us,
            _ => now_us(),
        };
        let top = filters.until_us.map_or(top, |u| u.min(top));
        let floor = retention_cutoff_us(retention_days).max(filters.since_us.unwrap_or(i64::MIN));
        for window in DESC_WINDOWS_US {
            let since = top.saturating_sub(*window);
            if since <= floor {
                break;
            }
            let ks = keys_since(Some(since)).await?;
            if ks.len() > limit as usize {
                found = Some(ks);
                break;
            }
        }
    }
    let mut keys = match found {
        Some(k) => k,
        None => keys_since(None).await?,
    };
    let has_more = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let (Some(lo), Some(hi)) = (
        keys.iter().map(|k| k.occurred_at_us).min(),
        keys.iter().map(|k| k.occurred_at_us).max(),
    ) else {
        let poll = match want_poll {
            true => Some(poll_cursor(ch, retention_days, scope, filters, None).await?),
            false => None,
        };
        return Ok(Page {
            rows: Vec::new(),
            has_more,
            poll,
        });
    };
    let ids: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE organization_id IN (?, '') AND occurred_at_us >= ? AND occurred_at_us <= ? \
         AND has(?, toString(id)) {} LIMIT 1 BY id",
        order_sql(order)
    );
    let rows = ch
        .query(&sql)
        .bind(&scope.org_id)
        .bind(lo)
        .bind(hi)
        .bind(ids)
        .fetch_all::<ReadRow>();
    // Both need only the keys: two round trips at once instead of one after the other.
    let poll = async {
        match want_poll {
            true => poll_cursor(ch, retention_days, scope, filters, Some(hi))
                .await
                .map(Some),
            false => Ok(None),
        }
    };
    let (rows, poll) = tokio::join!(rows, poll);
    Ok(Page {
        rows: rows?,
        has_more,
        poll: poll?,
    })
}

/// An asc cursor at the newest matching item (by ingestion order), for pollers that start "now".
///
/// `newest_us` is the commit time of the newest matching item (the first desc page's first row): the item
/// with the highest LSN committed at most the look-back before it, which bounds the scan to recent data.
pub async fn poll_cursor(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    newest_us: Option<i64>,
) -> Result<Cursor> {
    let Some(newest_us) = newest_us else {
        return Ok(Cursor::Asc {
            commit_lsn: 0,
            seq: 0,
            id: Uuid::nil(),
            ingested_at_us: now_us(),
        });
    };
    #[derive(clickhouse::Row, Deserialize)]
    struct Pos {
        commit_lsn: u64,
        seq: u32,
        #[serde(with = "clickhouse::serde::uuid")]
        id: Uuid,
        ingested_at_us: i64,
    }
    let mut w = Where::new(scope, retention_days);
    w.filters(filters);
    w.push(
        "occurred_at_us >= ?",
        Bind::I(newest_us.saturating_sub(ASC_LOOKBACK_US)),
    );
    let sql = format!(
        "SELECT commit_lsn, seq, id, ingested_at_us FROM audit_items WHERE {} ORDER BY commit_lsn DESC, seq DESC, id DESC LIMIT 1",
        w.sql()
    );
    let pos = w.apply(ch.query(&sql)).fetch_optional::<Pos>().await?;
    Ok(match pos {
        Some(p) => Cursor::Asc {
            commit_lsn: p.commit_lsn,
            seq: p.seq,
            id: p.id,
            ingested_at_us: p.ingested_at_us,
        },
        None => Cursor::Asc {
            commit_lsn: 0,
            seq: 0,
            id: Uuid::nil(),
            ingested_at_us: now_us(),
        },
    })
}

pub async fn get(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    id: Uuid,
) -> Result<Option<ReadRow>> {
    let mut w = Where::new(scope, retention_days);
    w.push("id = toUUID(?)", Bind::S(id.to_string()));
    let sql = format!("SELECT ?fields FROM audit_items WHERE {} LIMIT 1", w.sql());
    Ok(w.apply(ch.query(&sql)).fetch_optional::<ReadRow>().await?)
}

/// Ids of the items of one transaction that the caller may see.
pub async fn transaction_ids(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    event_id: Uuid,
) -> Result<Vec<Uuid>> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Id {
        #[serde(with = "clickhouse::serde::uuid")]
        id: Uuid,
    }
    let mut w = Where::new(scope, retention_days);
    w.push("event_id = toUUID(?)", Bind::S(event_id.to_string()));
    let sql = format!(
        "SELECT id FROM audit_items WHERE {} ORDER BY seq, id LIMIT 1 BY id LIMIT 1000",
        w.sql()
    );
    Ok(w.apply(ch.query(&sql))
        .fetch_all::<Id>()
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect())
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize, serde::Serialize)]
pub struct Facets {
    pub action: Vec<String>,
    pub resource_type: Vec<String>,
    pub source: Vec<String>,
    pub principal_type: Vec<String>,
    pub project_id: Vec<String>,
    pub user: Vec<String>,
    pub actor_source: Vec<String>,
}

pub async fn facets(ch: &clickhouse::Client, retention_days: u32, scope: &Scope) -> Result<Facets> {
    let w = Where::new(scope, retention_days);
    let sql = format!(
        // groupUniqArray(N) takes no size parameter on ClickHouse 18.16: slice afterwards.
        "SELECT arraySlice(groupUniqArray(action), 1, 200), arraySlice(groupUniqArray(resource_type), 1, 200), \
         arraySlice(groupUniqArray(source), 1, 200), arraySlice(groupUniqArray(principal_type), 1, 200), \
         arraySlice(groupUniqArray(project_id), 1, 1000), arraySlice(groupUniqArray(actor_email), 1, 1000), \
         arraySlice(groupUniqArray(actor_source), 1, 20) \
         FROM audit_items WHERE {}",
        w.sql()
    );
    let mut f = w.apply(ch.query(&sql)).fetch_one::<Facets>().await?;
    for v in [
        &mut f.action,
        &mut f.resource_type,
        &mut f.source,
        &mut f.principal_type,
        &mut f.project_id,
        &mut f.user,
        &mut f.actor_source,
    ] {
        v.retain(|s| !s.is_empty());
        v.sort();
    }
    Ok(f)
}

/// Every matching item, newest first, for export: read one UTC day at a time (a day is a partition), so
/// ClickHouse sorts and collapses a day's items per query rather than the whole retention window's before
/// the first byte, and memory stays flat on both sides however large the organization.
pub struct Export {
    ch: clickhouse::Client,
    retention_days: u32,
    scope: Scope,
    filters: Filters,
    /// Lower bound of the day being read; the next day read is the one before it.
    day_start: i64,
    /// Nothing older than this matches (retention, `since`).
    floor: i64,
    first: bool,
    rows: Option<clickhouse::query::RowCursor<ReadRow>>,
}

const DAY_US: i64 = 86_400 * 1_000_000;

pub fn export(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
) -> Export {
    let top = filters.until_us.map_or_else(now_us, |u| u.min(now_us()));
    Export {
        ch: ch.clone(),
        retention_days,
        scope: scope.clone(),
        filters: filters.clone(),
        day_start: top.div_euclid(DAY_US) * DAY_US,
        floor: retention_cutoff_us(retention_days).max(filters.since_us.unwrap_or(i64::MIN)),
        first: true,
        rows: None,
    }
}

impl Export {
    pub async fn next(&mut self) -> Result<Option<ReadRow>> {
        loop {
            if let Some(rows) = &mut self.rows {
                if let Some(r) = rows.next().await? {
                    return Ok(Some(r));
                }
                self.rows = None;
                self.day_start -= DAY_US;
            }
            // The first day is open above (items committed after `now` on a clock ahead of ours).
            if !self.first && self.day_start + DAY_US <= self.floor {
                return Ok(None);
            }
            let mut w = Where::new(&self.scope, self.retention_days);
            w.filters(&self.filters);
            w.push("occurred_at_us >= ?", Bind::I(self.day_start));
            if !self.first {
                w.push("occurred_at_us < ?", Bind::I(self.day_start + DAY_US));
            }
            self.first = false;
            let sql = format!(
                "SELECT ?fields FROM audit_items WHERE {} {} LIMIT 1 BY id",
                w.sql(),
                order_sql(Order::Desc)
            );
            self.rows = Some(w.apply(self.ch.query(&sql)).fetch::<ReadRow>()?);
        }
    }
}

/// Items across organizations in ingestion order, for the CLI: the newest `limit` (when `after` is None),
/// or those stored after a position (commit LSN, position, id).
pub async fn tail(
    ch: &clickhouse::Client,
    retention_days: u32,
    org: Option<&str>,
    after: Option<(u64, u32, Uuid)>,
    limit: u32,
) -> Result<Vec<ReadRow>> {
    let cutoff = retention_cutoff_us(retention_days);
    let mut w = Where {
        clauses: vec![RETAINED.into()],
        binds: vec![Bind::I(cutoff), Bind::I(cutoff)],
    };
    if let Some(o) = org {
        w.push("organization_id = ?", Bind::S(o.to_owned()));
    }
    let order = match after {
        Some((lsn, seq, id)) => {
            w.cursor(&Cursor::Asc {
                commit_lsn: lsn,
                seq,
                id,
                ingested_at_us: now_us(),
            });
            // The CLI follows live items: no look-back limit on commit time is needed beyond the window.
            w.clauses.pop();
            w.binds.pop();
            "ORDER BY commit_lsn ASC, seq ASC, id ASC"
        }
        None => "ORDER BY commit_lsn DESC, seq DESC, id DESC",
    };
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE {} {order} LIMIT 1 BY id LIMIT {}",
        w.sql(),
        limit
    );
    let mut rows = w.apply(ch.query(&sql)).fetch_all::<ReadRow>().await?;
    if after.is_none() {
        rows.reverse();
    }
    Ok(rows)
}

/// What the store holds from this source (or one of its tables): any item at all means a lost slot, or a
/// table that left the publication, leaves a gap; the last position says where it starts.
pub async fn history(
    ch: &clickhouse::Client,
    source_id: &str,
    table: Option<&str>,
) -> Result<crate::capture::provision::StoredHistory> {
    use anyhow::Context;
    #[derive(clickhouse::Row, Deserialize)]
    struct H {
        n: u64,
        lsn: u64,
        t: i64,
        ing: i64,
    }
    // Gap items mark where capture resumed, not a captured change: they do not count.
    let sql =
        format!(
        "SELECT count() AS n, max(commit_lsn) AS lsn, max(occurred_at_us) AS t, max(ingested_at_us) AS ing \
         FROM audit_items WHERE source_id = ? AND action != '{}'{}",
        crate::vocab::action::GAP,
        if table.is_some() { " AND table_name = ?" } else { "" }
    );
    let mut q = ch.query(&sql).bind(source_id);
    if let Some(t) = table {
        q = q.bind(t);
    }
    let h = q
        .fetch_one::<H>()
        .await
        .context("reading what ClickHouse holds from this source")?;
    Ok(crate::capture::provision::StoredHistory {
        items: h.n,
        last_lsn: (h.n > 0).then_some(h.lsn),
        last_time_us: (h.n > 0).then_some(h.t),
        last_ingested_us: (h.n > 0).then_some(h.ing),
    })
}

/// Each chain's head as of a position (items committed before it, and accepted gaps, which are written
/// before streaming from their position), with its last checkpoint: where linking resumes after a restart.
pub async fn chain_heads(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Result<std::collections::HashMap<String, crate::audit::chain::Head>> {
    use anyhow::Context;
    #[derive(clickhouse::Row, Deserialize)]
    struct H {
        chain: String,
        seq: u64,
        hash: String,
        first_t: i64,
    }
    #[derive(clickhouse::Row, Deserialize)]
    struct C {
        chain: String,
        seq: u64,
        t: i64,
    }
    let heads = ch
        .query(
            "SELECT if(platform_wide = 1, '', organization_id) AS chain, max(chain_seq) AS seq, \
             argMax(chain_hash, chain_seq) AS hash, min(occurred_at_us) AS first_t FROM audit_items \
             WHERE source_id = ? AND chain_seq > 0 AND (commit_lsn < ? OR action = ?) GROUP BY chain",
        )
        .bind(source_id)
        .bind(before_lsn)
        .bind(crate::vocab::action::GAP)
        .fetch_all::<H>()
        .await
        .context("reading the hash chains' heads from ClickHouse")?;
    let cps = ch
        .query(
            "SELECT organization_id AS chain, max(chain_seq) AS seq, argMax(commit_time_us, chain_seq) AS t \
             FROM audit_checkpoints WHERE source_id = ? AND commit_lsn < ? GROUP BY chain",
        )
        .bind(source_id)
        .bind(before_lsn)
        .fetch_all::<C>()
        .await
        .context("reading the chains' last checkpoints from ClickHouse")?;
    let mut out: std::collections::HashMap<String, crate::audit::chain::Head> = heads
        .into_iter()
        .map(|h| {
            (
                h.chain,
                crate::audit::chain::Head {
                    seq: h.seq,
                    hash: h.hash,
                    checkpointed_seq: 0,
                    // Without a checkpoint yet, the clock runs from the chain's first item.
                    checkpointed_time_us: h.first_t,
                },
            )
        })
        .collect();
    for c in cps {
        if let Some(h) = out.get_mut(&c.chain) {
            h.checkpointed_seq = c.seq.min(h.seq);
            h.checkpointed_time_us = c.t;
        }
    }
    Ok(out)
}

/// One chain's items in chain order (the organization's own, or the platform chain for ''), between
/// commit times when given, for verification.
pub async fn chain_rows(
    ch: &clickhouse::Client,
    chain: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<ReadRow>> {
    let mut sql = String::from(
        "SELECT ?fields FROM audit_items WHERE organization_id = ? AND platform_wide = ? AND chain_seq > 0",
    );
    if since_us.is_some() {
        sql.push_str(" AND occurred_at_us >= ?");
    }
    if until_us.is_some() {
        sql.push_str(" AND occurred_at_us < ?");
    }
    sql.push_str(" ORDER BY source_id, chain_seq LIMIT 1 BY id");
    let mut q = ch.query(&sql).bind(chain).bind(u8::from(chain.is_empty()));
    if let Some(s) = since_us {
        q = q.bind(s);
    }
    if let Some(u) = until_us {
        q = q.bind(u);
    }
    Ok(q.fetch_all::<ReadRow>().await?)
}

/// The checkpoints of one chain.
pub async fn checkpoints(
    ch: &clickhouse::Client,
    chain: &str,
) -> Result<Vec<crate::store::row::CheckpointRow>> {
    Ok(ch
        .query("SELECT ?fields FROM audit_checkpoints WHERE organization_id = ? ORDER BY source_id, chain_seq LIMIT 1 BY source_id, chain_seq")
        .bind(chain)
        .fetch_all::<crate::store::row::CheckpointRow>()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::from_u128(42);
        for c in [
            Cursor::Desc {
                occurred_at_us: 123,
                id,
            },
            Cursor::Asc {
                commit_lsn: 9,
                seq: 2,
                id,
                ingested_at_us: -5,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        for bad in ["", "!!!", "djE6ZDp4Onk", "'; DROP TABLE audit_items; --"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}

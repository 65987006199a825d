//! Read queries for the API: filtered, scoped, deduplicated, keyset-paged. Every value from a request is
//! bound as a parameter (escaped by the client), never spliced into the SQL text.

use anyhow::{bail, Result};
use base64::Engine;
use serde::Deserialize;
use uuid::Uuid;

use crate::store::row::now_us;
use crate::store::sql::Select;

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
    /// Ingestion order, each source's items in its commit order: what a poller walks.
    Asc,
}

/// A position in a listing. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Desc { occurred_at_us: i64, id: Uuid },
    Asc(AscCursor),
}

/// A place in one source's commit order: commit LSN, position in the transaction, id. LSNs of different
/// sources (Postgres databases) are not comparable, so a position only means something within its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub commit_lsn: u64,
    pub seq: u32,
    pub id: Uuid,
}

/// The last item a poller was given from one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub source_id: String,
    pub at: Position,
    /// When that item was stored: the source's items after it are looked for from here, less the look-back.
    pub ingested_at_us: i64,
}

/// Where a poller stands in a trail written by several sources: a position per source it has been given
/// items of. Items of the sources it lists count when they come after that source's position; items of any
/// other source count (a source that appears later is followed from its first item), bounded by `others_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AscCursor {
    /// Sorted by source id, each once; at most [`MAX_CURSOR_SOURCES`].
    pub sources: Vec<SourcePosition>,
    /// Items of sources not listed count only when stored since this time, less the look-back (a cursor that
    /// starts "now"); `None`: all of them.
    pub others_since_us: Option<i64>,
    /// Items of sources not listed count only after this position. Only a v1/v2 cursor sets it: it had one
    /// position for every source.
    pub others_after: Option<Position>,
}

/// The most sources one asc cursor follows: bounds the cursor's size (it travels in a URL) and the query.
pub const MAX_CURSOR_SOURCES: usize = 64;
/// The longest source id a cursor can carry (`capture.source_id` is held to it).
pub const MAX_SOURCE_ID_BYTES: usize = 255;

/// Why an asc page stopped short: following one more source would exceed [`MAX_CURSOR_SOURCES`] (or a stored
/// source id is longer than a cursor can carry).
#[derive(Debug, thiserror::Error)]
#[error("this poll cannot follow one more source: a cursor holds at most {MAX_CURSOR_SOURCES} sources (with ids of at most {MAX_SOURCE_ID_BYTES} bytes); filter to fewer sources' items")]
pub struct TooManySources;

impl AscCursor {
    /// A cursor that starts now: items stored from now on (less the look-back, for sources it does not list).
    pub fn starting_now() -> AscCursor {
        AscCursor {
            others_since_us: Some(now_us()),
            ..AscCursor::default()
        }
    }

    /// Move the source's position to an item given to the poller (never back). False when the source is new
    /// and the cursor cannot take another one.
    pub fn advance(&mut self, source_id: &str, at: Position, ingested_at_us: i64) -> bool {
        match self
            .sources
            .binary_search_by(|s| s.source_id.as_str().cmp(source_id))
        {
            Ok(i) => {
                let s = &mut self.sources[i];
                if at > s.at {
                    s.at = at;
                    s.ingested_at_us = ingested_at_us;
                }
                true
            }
            Err(i) => {
                if self.sources.len() >= MAX_CURSOR_SOURCES || source_id.len() > MAX_SOURCE_ID_BYTES
                {
                    return false;
                }
                self.sources.insert(
                    i,
                    SourcePosition {
                        source_id: source_id.to_owned(),
                        at,
                        ingested_at_us,
                    },
                );
                true
            }
        }
    }

    /// `v3:` then: flags (1: `others_since_us`, 2: `others_after`), those when present, the number of
    /// sources, and each source as its id's length (one byte), the id's UTF-8 bytes, commit LSN, seq, id and
    /// ingestion time; integers little-endian. Length-prefixed, so a source id may hold any character.
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.sources.len() * 64);
        b.extend_from_slice(V3);
        let flags =
            u8::from(self.others_since_us.is_some()) | (u8::from(self.others_after.is_some()) << 1);
        b.push(flags);
        if let Some(t) = self.others_since_us {
            b.extend_from_slice(&t.to_le_bytes());
        }
        if let Some(p) = self.others_after {
            put_position(&mut b, &p);
        }
        // `advance` and `from_bytes` keep both bounds; the count is clamped so the bytes never lie.
        let n = self.sources.len().min(MAX_CURSOR_SOURCES);
        b.push(n as u8);
        for s in &self.sources[..n] {
            let id = &s.source_id.as_bytes()[..s.source_id.len().min(MAX_SOURCE_ID_BYTES)];
            b.push(id.len() as u8);
            b.extend_from_slice(id);
            put_position(&mut b, &s.at);
            b.extend_from_slice(&s.ingested_at_us.to_le_bytes());
        }
        b
    }

    /// The inverse of [`to_bytes`], refusing anything it would not have written.
    fn from_bytes(b: &[u8]) -> Option<AscCursor> {
        let mut r = Reader(b.strip_prefix(V3)?);
        let flags = r.u8()?;
        if flags & !3 != 0 {
            return None;
        }
        let others_since_us = if flags & 1 != 0 { Some(r.i64()?) } else { None };
        let others_after = if flags & 2 != 0 {
            Some(r.position()?)
        } else {
            None
        };
        let n = r.u8()? as usize;
        if n > MAX_CURSOR_SOURCES {
            return None;
        }
        let mut sources: Vec<SourcePosition> = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u8()? as usize;
            let source_id = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
            // Sorted and unique, as written: the same cursor has one spelling.
            if sources
                .last()
                .is_some_and(|p| p.source_id.as_str() >= source_id.as_str())
            {
                return None;
            }
            let at = r.position()?;
            let ingested_at_us = r.i64()?;
            sources.push(SourcePosition {
                source_id,
                at,
                ingested_at_us,
            });
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(AscCursor {
            sources,
            others_since_us,
            others_after,
        })
    }
}

const V3: &[u8] = b"v3:";

fn put_position(b: &mut Vec<u8>, p: &Position) {
    b.extend_from_slice(&p.commit_lsn.to_le_bytes());
    b.extend_from_slice(&p.seq.to_le_bytes());
    b.extend_from_slice(p.id.as_bytes());
}

/// Reads a cursor's bytes front to back; `None` when they run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn position(&mut self) -> Option<Position> {
        Some(Position {
            commit_lsn: self.u64()?,
            seq: self.u32()?,
            id: Uuid::from_slice(self.take(16)?).ok()?,
        })
    }
}

/// Within a source, items of higher commit LSN are stored after those of lower LSN, and since this version
/// a source's ingestion times never go back (see `pipeline::assemble`); items stored by older versions
/// carry waltrail's wall clock, which can step back. The asc scan looks back this far from a source's
/// position's ingestion time.
const ASC_LOOKBACK_US: i64 = 3_600 * 1_000_000;

/// The longest cursor text a request may carry (64 sources with ids of 255 bytes fit).
pub const MAX_CURSOR_TEXT: usize = 32 * 1024;

/// Windows (below a newest-first page's top) in which its keys are looked for first: an hour, a day, a week.
const DESC_WINDOWS_US: &[i64] = &[
    3_600 * 1_000_000,
    86_400 * 1_000_000,
    7 * 86_400 * 1_000_000,
];

impl Cursor {
    pub fn encode(&self) -> String {
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        match self {
            Cursor::Desc { occurred_at_us, id } => {
                b64.encode(format!("v1:d:{occurred_at_us}:{id}"))
            }
            Cursor::Asc(c) => b64.encode(c.to_bytes()),
        }
    }

    pub fn decode(s: &str) -> Result<Cursor> {
        let bad = || anyhow::anyhow!("not a cursor this API issued");
        if s.len() > MAX_CURSOR_TEXT {
            return Err(bad());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad())?;
        if raw.starts_with(V3) {
            return AscCursor::from_bytes(&raw).map(Cursor::Asc).ok_or_else(bad);
        }
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let parts: Vec<&str> = raw.split(':').collect();
        match parts.as_slice() {
            ["v1", "d", t, id] => Ok(Cursor::Desc {
                occurred_at_us: t.parse().map_err(|_| bad())?,
                id: id.parse().map_err(|_| bad())?,
            }),
            // v1 and v2 asc cursors held one position for the whole trail, compared with every source's
            // LSNs: they are read as that position for every source (what they meant when issued; exact for
            // a single source), which the first page then replaces with a position per source seen. v1 carried
            // the commit time; it is never later than the ingestion time, so the scan only looks back further.
            ["v1" | "v2", "a", lsn, seq, id, t] => Ok(Cursor::Asc(AscCursor {
                sources: Vec::new(),
                others_since_us: Some(t.parse().map_err(|_| bad())?),
                others_after: Some(Position {
                    commit_lsn: lsn.parse().map_err(|_| bad())?,
                    seq: seq.parse().map_err(|_| bad())?,
                    id: id.parse().map_err(|_| bad())?,
                }),
            })),
            _ => Err(bad()),
        }
    }

    pub fn order(&self) -> Order {
        match self {
            Cursor::Desc { .. } => Order::Desc,
            Cursor::Asc(_) => Order::Asc,
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
        let cutoff = retained_since_us(retention_days);
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
            // No project: 18.16 cannot type `has([], project_id)` (QA36 L1: every list failed with 503).
            if projects.is_empty() {
                w.clauses.push(if scope.include_org_level {
                    "project_id = ''".into()
                } else {
                    "0".into()
                });
            } else if scope.include_org_level {
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
        // An email address is matched without regard to case (BOB@acme.io is bob@acme.io).
        if !f.users.is_empty() {
            self.push(
                "has(?, lowerUTF8(actor_email))",
                Bind::A(f.users.iter().map(|u| u.to_lowercase()).collect()),
            );
        }
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
        match c {
            Cursor::Desc { occurred_at_us, id } => {
                self.clauses
                    .push("(occurred_at_us < ? OR (occurred_at_us = ? AND id < toUUID(?)))".into());
                self.binds.push(Bind::I(*occurred_at_us));
                self.binds.push(Bind::I(*occurred_at_us));
                self.binds.push(Bind::S(id.to_string()));
            }
            Cursor::Asc(c) => self.asc_cursor(c),
        }
    }

    /// `(source_id = S1 AND ingested_at_us >= t1 AND (commit_lsn, seq, id) > p1) OR … OR (the other
    /// sources, within their bounds)`, spelled out (ClickHouse 18.16 compares no tuples), and, when every
    /// branch has a lower ingestion bound, the lowest of them on its own, which ClickHouse can apply first.
    fn asc_cursor(&mut self, c: &AscCursor) {
        let mut branches = Vec::with_capacity(c.sources.len() + 1);
        let mut binds = Vec::new();
        let mut floor = Some(i64::MAX);
        for s in &c.sources {
            let since = s.ingested_at_us.saturating_sub(ASC_LOOKBACK_US);
            floor = floor.map(|f| f.min(since));
            branches.push(format!(
                "(source_id = ? AND ingested_at_us >= ? AND {AFTER})"
            ));
            binds.push(Bind::S(s.source_id.clone()));
            binds.push(Bind::I(since));
            after_binds(&mut binds, &s.at);
        }
        let mut others = Vec::new();
        if !c.sources.is_empty() {
            others.push("NOT has(?, source_id)".to_owned());
            binds.push(Bind::A(
                c.sources.iter().map(|s| s.source_id.clone()).collect(),
            ));
        }
        match c.others_since_us {
            Some(t) => {
                let since = t.saturating_sub(ASC_LOOKBACK_US);
                floor = floor.map(|f| f.min(since));
                others.push("ingested_at_us >= ?".into());
                binds.push(Bind::I(since));
            }
            None => floor = None,
        }
        if let Some(p) = &c.others_after {
            others.push(AFTER.into());
            after_binds(&mut binds, p);
        }
        if others.is_empty() {
            // No position and no bound: every item counts.
            return;
        }
        branches.push(format!("({})", others.join(" AND ")));
        if let Some(f) = floor {
            self.push("ingested_at_us >= ?", Bind::I(f));
        }
        self.clauses.push(format!("({})", branches.join(" OR ")));
        self.binds.extend(binds);
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

/// After a position in its source's commit order.
const AFTER: &str =
    "(commit_lsn > ? OR (commit_lsn = ? AND (seq > ? OR (seq = ? AND id > toUUID(?)))))";

fn after_binds(binds: &mut Vec<Bind>, p: &Position) {
    binds.push(Bind::U(p.commit_lsn));
    binds.push(Bind::U(p.commit_lsn));
    binds.push(Bind::U(p.seq as u64));
    binds.push(Bind::U(p.seq as u64));
    binds.push(Bind::S(p.id.to_string()));
}

/// An item is kept for the retention window from its commit time, and never less from when it was stored:
/// a transaction applied through a replication origin can carry a commit time days old.
const RETAINED: &str = "(occurred_at_us >= ? OR ingested_at_us >= ?)";

pub fn retention_cutoff_us(days: u32) -> i64 {
    now_us() - days as i64 * 86_400 * 1_000_000
}

/// From when retention keeps every item whole: the start of the cutoff's (UTC) day, since it drops whole
/// days before it. Verification holds the trail complete from here (each chain's first item of a day has a
/// checkpoint stamped with the day's start, see `Chainer`).
pub fn retained_since_us(days: u32) -> i64 {
    retention_cutoff_us(days).div_euclid(DAY_US) * DAY_US
}

/// One total order over every source's items: by when they were stored, each source's in its commit order
/// (a source's ingestion times never go back, and its items are stored in commit order).
const ASC_ORDER: &str =
    "ORDER BY ingested_at_us ASC, source_id ASC, commit_lsn ASC, seq ASC, id ASC";

fn order_sql(order: Order) -> &'static str {
    match order {
        Order::Desc => "ORDER BY occurred_at_us DESC, id DESC",
        Order::Asc => ASC_ORDER,
    }
}

/// The order of whole rows: `version DESC` last, so that where two copies of an item differ, a read
/// collapsing them (`LIMIT 1 BY id`) shows the one merges keep. (Keys need no such tie-break: copies
/// share their id and time, and reading `version` would cost the first step a column.)
fn rows_order_sql(order: Order) -> String {
    format!("{}, version DESC", order_sql(order))
}

pub struct Page {
    pub rows: Vec<ReadRow>,
    pub has_more: bool,
    /// When asked for: an asc cursor at the newest matching item, for pollers (see [`poll_cursor`]).
    pub poll: Option<Cursor>,
    /// An asc page's next cursor: the one it was read from, with each source on the page moved to its last
    /// item there (a poller keeps its place when nothing new came).
    pub next_asc: Option<AscCursor>,
}

/// A page's key: what the first step of [`list`] reads of each item.
#[derive(clickhouse::Row, Deserialize)]
pub(crate) struct PageKey {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    occurred_at_us: i64,
    source_id: String,
    commit_lsn: u64,
    seq: u32,
    ingested_at_us: i64,
}

/// The first step of a page (see [`list`]): the keys of its items, and one more to tell whether there are
/// more; with `since`, only items committed since then (one of the newest-first windows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn list_keys_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    order: Order,
    cursor: Option<&Cursor>,
    limit: u32,
    since: Option<i64>,
) -> Select<PageKey> {
    // Newest first needs only the id and time; asc also the position, for the next cursor. (Rows are read by
    // position; the placeholders' names must not be columns', which an alias would hide from WHERE.)
    let columns = match order {
        Order::Desc => "id, occurred_at_us, '' AS no_source, toUInt64(0) AS no_lsn, toUInt32(0) AS no_seq, toInt64(0) AS no_ingested",
        Order::Asc => "id, occurred_at_us, source_id, commit_lsn, seq, ingested_at_us",
    };
    let mut w = Where::new(scope, retention_days);
    w.filters(filters);
    if let Some(c) = cursor {
        w.cursor(c);
    }
    if let Some(t) = since {
        w.push("occurred_at_us >= ?", Bind::I(t));
    }
    let sql = format!(
        "SELECT {columns} FROM audit_items WHERE {} {} LIMIT 1 BY id LIMIT {}",
        w.sql(),
        order_sql(order),
        limit as u64 + 1
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// The second step of a page (see [`list`]): the whole rows of its keys' ids, from the granules of their
/// commit times (`lo` to `hi`). The ids are a set of UUIDs (`IN`, one hash lookup per row) rather than
/// `has(ids, toString(id))`, which formatted every candidate row's id and scanned the list for it: half
/// of ClickHouse's CPU for the page's rows (6.6 → 3.5 ms per first page on 18.16, measured on 3M items).
pub(crate) fn list_rows_query(
    ch: &clickhouse::Client,
    org_id: &str,
    lo: i64,
    hi: i64,
    ids: Vec<String>,
    order: Order,
) -> Select<ReadRow> {
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE organization_id IN (?, '') AND occurred_at_us >= ? AND occurred_at_us <= ? \
         AND id IN (SELECT arrayJoin(arrayMap(x -> toUUID(x), ?))) {} LIMIT 1 BY id",
        rows_order_sql(order)
    );
    Select::new(ch.query(&sql).bind(org_id).bind(lo).bind(hi).bind(ids))
}

/// One page. Replayed copies of an item are collapsed (`LIMIT 1 BY id`). With `want_poll` (a desc page)
/// the poll cursor is looked up too, at the same time as the page's rows. An asc page that would need a
/// cursor following more than [`MAX_CURSOR_SOURCES`] sources stops before the first item of the one too
/// many; when that is its first item, the error is [`TooManySources`].
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
    let keys_since = |since: Option<i64>| {
        list_keys_query(
            ch,
            retention_days,
            scope,
            filters,
            order,
            cursor,
            limit,
            since,
        )
        .fetch_all()
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
        let floor = retained_since_us(retention_days).max(filters.since_us.unwrap_or(i64::MIN));
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
    let mut has_more = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let next_asc = match (order, cursor) {
        (Order::Desc, _) => None,
        (Order::Asc, c) => {
            let mut next = match c {
                Some(Cursor::Asc(a)) => a.clone(),
                _ => AscCursor::default(),
            };
            let fits = keys.iter().position(|k| {
                let at = Position {
                    commit_lsn: k.commit_lsn,
                    seq: k.seq,
                    id: k.id,
                };
                !next.advance(&k.source_id, at, k.ingested_at_us)
            });
            if let Some(n) = fits {
                if n == 0 {
                    return Err(TooManySources.into());
                }
                keys.truncate(n);
                has_more = true;
            }
            Some(next)
        }
    };
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
            next_asc,
        });
    };
    let ids: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
    let rows = list_rows_query(ch, &scope.org_id, lo, hi, ids, order).fetch_all();
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
    let mut rows = rows?;
    // In the keys' order, which the next cursor follows (a replayed copy can carry another ingestion time).
    let rank: std::collections::HashMap<Uuid, usize> =
        keys.iter().enumerate().map(|(i, k)| (k.id, i)).collect();
    rows.sort_by_key(|r| rank.get(&r.id).copied().unwrap_or(usize::MAX));
    Ok(Page {
        rows,
        has_more,
        poll: poll?,
        next_asc,
    })
}

/// An asc cursor at the newest matching item of each source, for pollers that start "now".
///
/// `newest_us` is the commit time of the newest matching item (the first desc page's first row): each
/// source's item with the highest position committed at most the look-back before it, which bounds the scan
/// to recent data. Sources without such an item are not listed: their items count from the cursor's time,
/// less the look-back.
pub async fn poll_cursor(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    newest_us: Option<i64>,
) -> Result<Cursor> {
    let mut cursor = AscCursor::starting_now();
    let Some(newest_us) = newest_us else {
        return Ok(Cursor::Asc(cursor));
    };
    let q = poll_cursor_query(ch, retention_days, scope, filters, newest_us);
    for p in q.fetch_all().await? {
        cursor.advance(&p.source_id, p.at(), p.ingested_at_us);
    }
    Ok(Cursor::Asc(cursor))
}

/// Each source's newest matching item committed at most the look-back before `newest_us` (see
/// [`poll_cursor`]).
pub(crate) fn poll_cursor_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    newest_us: i64,
) -> Select<Newest> {
    let mut w = Where::new(scope, retention_days);
    w.filters(filters);
    w.push(
        "occurred_at_us >= ?",
        Bind::I(newest_us.saturating_sub(ASC_LOOKBACK_US)),
    );
    let sql = format!(
        "SELECT source_id, commit_lsn, seq, id, ingested_at_us FROM audit_items WHERE {} \
         ORDER BY source_id, commit_lsn DESC, seq DESC, id DESC LIMIT 1 BY source_id LIMIT {}",
        w.sql(),
        MAX_CURSOR_SOURCES
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// A source's newest item, as `poll_cursor` and `follow_cursor` read it.
#[derive(clickhouse::Row, Deserialize)]
pub(crate) struct Newest {
    source_id: String,
    commit_lsn: u64,
    seq: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    ingested_at_us: i64,
}

impl Newest {
    fn at(&self) -> Position {
        Position {
            commit_lsn: self.commit_lsn,
            seq: self.seq,
            id: self.id,
        }
    }
}

pub async fn get(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    id: Uuid,
) -> Result<Option<ReadRow>> {
    Ok(get_query(ch, retention_days, scope, id)
        .fetch_optional()
        .await?)
}

pub(crate) fn get_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    id: Uuid,
) -> Select<ReadRow> {
    let mut w = Where::new(scope, retention_days);
    w.push("id = toUUID(?)", Bind::S(id.to_string()));
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE {} ORDER BY version DESC LIMIT 1",
        w.sql()
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// Ids of the items of one transaction that the caller may see.
pub async fn transaction_ids(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    event_id: Uuid,
) -> Result<Vec<Uuid>> {
    Ok(transaction_query(ch, retention_days, scope, event_id)
        .fetch_all()
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect())
}

#[derive(clickhouse::Row, Deserialize)]
pub(crate) struct ItemId {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
}

pub(crate) fn transaction_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    event_id: Uuid,
) -> Select<ItemId> {
    let mut w = Where::new(scope, retention_days);
    w.push("event_id = toUUID(?)", Bind::S(event_id.to_string()));
    let sql = format!(
        "SELECT id FROM audit_items WHERE {} ORDER BY seq, id LIMIT 1 BY id LIMIT 1000",
        w.sql()
    );
    Select::new(w.apply(ch.query(&sql)))
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
    let mut f = facets_query(ch, retention_days, scope).fetch_one().await?;
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

pub(crate) fn facets_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
) -> Select<Facets> {
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
    Select::new(w.apply(ch.query(&sql)))
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
    /// Whether the last read is done: items committed before the days read but stored within retention
    /// (a replication origin's old commit time), which lists show too.
    older_read: bool,
    rows: Option<clickhouse::query::RowCursor<ReadRow>>,
}

use crate::audit::chain::DAY_US;

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
        floor: retained_since_us(retention_days).max(filters.since_us.unwrap_or(i64::MIN)),
        first: true,
        older_read: false,
        rows: None,
    }
}

impl Export {
    /// The export holds every item its filters select committed at or after this time (the retention
    /// window's start, or a later `since`).
    pub fn floor(&self) -> i64 {
        self.floor
    }

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
                if self.older_read {
                    return Ok(None);
                }
                self.older_read = true;
                let q = export_older_query(
                    &self.ch,
                    self.retention_days,
                    &self.scope,
                    &self.filters,
                    self.day_start + DAY_US,
                );
                self.rows = Some(q.fetch()?);
                continue;
            }
            let q = export_day_query(
                &self.ch,
                self.retention_days,
                &self.scope,
                &self.filters,
                self.day_start,
                self.first,
            );
            self.first = false;
            self.rows = Some(q.fetch()?);
        }
    }
}

/// One day of an export (see [`Export`]); the first day read is open above.
pub(crate) fn export_day_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    day_start: i64,
    first: bool,
) -> Select<ReadRow> {
    let mut w = Where::new(scope, retention_days);
    w.filters(filters);
    w.push("occurred_at_us >= ?", Bind::I(day_start));
    if !first {
        w.push("occurred_at_us < ?", Bind::I(day_start + DAY_US));
    }
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE {} {} LIMIT 1 BY id",
        w.sql(),
        rows_order_sql(Order::Desc)
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// What an export reads after its days (see [`Export`]): items committed before `before` and still
/// retained because they were stored within the window, oldest commit times last.
pub(crate) fn export_older_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    scope: &Scope,
    filters: &Filters,
    before: i64,
) -> Select<ReadRow> {
    let mut w = Where::new(scope, retention_days);
    w.filters(filters);
    w.push("occurred_at_us < ?", Bind::I(before));
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE {} {} LIMIT 1 BY id",
        w.sql(),
        rows_order_sql(Order::Desc)
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// The CLI's scope: every organization, or one.
fn tail_where(retention_days: u32, org: Option<&str>) -> Where {
    let cutoff = retained_since_us(retention_days);
    let mut w = Where {
        clauses: vec![RETAINED.into()],
        binds: vec![Bind::I(cutoff), Bind::I(cutoff)],
    };
    if let Some(o) = org {
        w.push("organization_id = ?", Bind::S(o.to_owned()));
    }
    w
}

/// Items across organizations in the asc order (by when they were stored, each source's in commit order),
/// for the CLI: the newest `limit` (when `after` is None), or those after a cursor (see [`follow_cursor`]
/// and [`advance`]).
pub async fn tail(
    ch: &clickhouse::Client,
    retention_days: u32,
    org: Option<&str>,
    after: Option<&AscCursor>,
    limit: u32,
) -> Result<Vec<ReadRow>> {
    let mut rows = tail_query(ch, retention_days, org, after, limit)
        .fetch_all()
        .await?;
    if after.is_none() {
        rows.reverse();
    }
    Ok(rows)
}

/// What [`tail`] reads: the newest `limit` items newest first (it reverses them), or those after a cursor.
pub(crate) fn tail_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    org: Option<&str>,
    after: Option<&AscCursor>,
    limit: u32,
) -> Select<ReadRow> {
    let mut w = tail_where(retention_days, org);
    let order = match after {
        Some(c) => {
            w.asc_cursor(c);
            ASC_ORDER
        }
        None => "ORDER BY ingested_at_us DESC, source_id DESC, commit_lsn DESC, seq DESC, id DESC",
    };
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE {} {order} LIMIT 1 BY id LIMIT {}",
        w.sql(),
        limit
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// A cursor at each source's newest item (every organization's, or one's), from which the CLI follows.
pub async fn follow_cursor(
    ch: &clickhouse::Client,
    retention_days: u32,
    org: Option<&str>,
) -> Result<AscCursor> {
    let q = follow_cursor_query(ch, retention_days, org);
    let mut cursor = AscCursor::starting_now();
    for p in q.fetch_all().await? {
        cursor.advance(&p.source_id, p.at(), p.ingested_at_us);
    }
    Ok(cursor)
}

/// Each source's newest item, for [`follow_cursor`].
pub(crate) fn follow_cursor_query(
    ch: &clickhouse::Client,
    retention_days: u32,
    org: Option<&str>,
) -> Select<Newest> {
    let w = tail_where(retention_days, org);
    let sql = format!(
        "SELECT source_id, commit_lsn, seq, id, ingested_at_us FROM audit_items WHERE {} \
         ORDER BY source_id, commit_lsn DESC, seq DESC, id DESC LIMIT 1 BY source_id LIMIT {}",
        w.sql(),
        MAX_CURSOR_SOURCES
    );
    Select::new(w.apply(ch.query(&sql)))
}

/// Move the cursor past rows read in the asc order; returns how many of them it could take (the rest are
/// of a source one too many for a cursor: see [`MAX_CURSOR_SOURCES`]).
pub fn advance(cursor: &mut AscCursor, rows: &[ReadRow]) -> usize {
    rows.iter()
        .position(|r| {
            let at = Position {
                commit_lsn: r.commit_lsn,
                seq: r.seq,
                id: r.id,
            };
            !cursor.advance(&r.source_id, at, r.ingested_at_us)
        })
        .unwrap_or(rows.len())
}

/// What the store holds from this source (or one of its tables): any item at all means a lost slot, or a
/// table that left the publication, leaves a gap; the last position says where it starts.
pub async fn history(
    ch: &clickhouse::Client,
    source_id: &str,
    table: Option<&str>,
) -> Result<crate::capture::provision::StoredHistory> {
    use anyhow::Context;
    let h = history_query(ch, source_id, table)
        .fetch_one()
        .await
        .context("reading what ClickHouse holds from this source")?;
    Ok(crate::capture::provision::StoredHistory {
        items: h.n,
        last_lsn: (h.n > 0).then_some(h.lsn),
        last_time_us: (h.n > 0).then_some(h.t),
        last_ingested_us: (h.n > 0).then_some(h.ing),
    })
}

#[derive(clickhouse::Row, Deserialize)]
pub(crate) struct HistoryRow {
    n: u64,
    lsn: u64,
    t: i64,
    ing: i64,
}

/// When the source's last recorded gap was recorded (its commit time), if any.
pub async fn last_gap_us(ch: &clickhouse::Client, source_id: &str) -> Result<Option<i64>> {
    let (n, t) = last_gap_query(ch, source_id).fetch_one().await?;
    Ok((n > 0).then_some(t))
}

/// Where the source's latest record of checkpoint signing turned off was placed (its commit position), of
/// those linked into its chain at or before `upto` (where capture resumes): a row written into the store by
/// hand, unchained or placed ahead of capture, is not taken for one.
pub async fn last_signing_gap_lsn(
    ch: &clickhouse::Client,
    source_id: &str,
    upto: u64,
) -> Result<Option<u64>> {
    let (n, lsn) = last_signing_gap_query(ch, source_id, upto)
        .fetch_one()
        .await?;
    Ok((n > 0).then_some(lsn))
}

pub(crate) fn last_signing_gap_query(
    ch: &clickhouse::Client,
    source_id: &str,
    upto: u64,
) -> Select<(u64, u64)> {
    Select::new(
        ch.query(
            "SELECT count(), max(commit_lsn) FROM audit_items WHERE source_id = ? AND action = ? \
             AND resource_id = ? AND platform_wide = 1 AND chain_seq > 0 AND commit_lsn <= ?",
        )
        .bind(source_id)
        .bind(crate::vocab::action::GAP)
        .bind(crate::audit::item::signing_gap_resource(source_id))
        .bind(upto),
    )
}

/// Which of `ids` the store holds for the source.
pub async fn stored_ids(
    ch: &clickhouse::Client,
    source_id: &str,
    ids: &[String],
) -> Result<std::collections::HashSet<String>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(stored_ids_query(ch, source_id, ids)
        .fetch_all()
        .await?
        .into_iter()
        .collect())
}

pub(crate) fn stored_ids_query(
    ch: &clickhouse::Client,
    source_id: &str,
    ids: &[String],
) -> Select<String> {
    Select::new(
        ch.query(
            "SELECT DISTINCT toString(id) AS i FROM audit_items WHERE source_id = ? AND has(?, toString(id))",
        )
        .bind(source_id)
        .bind(ids)
        .with_setting("max_query_size", query_size_for(ids)),
    )
}

/// The tables the source's items are of (gap records aside), each with its last item's commit position
/// and time.
pub async fn tables_in_trail(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Result<Vec<(String, u64, i64)>> {
    Ok(tables_in_trail_query(ch, source_id).fetch_all().await?)
}

pub(crate) fn tables_in_trail_query(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Select<(String, u64, i64)> {
    Select::new(
        ch.query(
            "SELECT table_name, max(commit_lsn), max(occurred_at_us) FROM audit_items \
             WHERE source_id = ? AND action != ? AND table_name != '' GROUP BY table_name ORDER BY table_name",
        )
        .bind(source_id)
        .bind(crate::vocab::action::GAP),
    )
}

/// Per table, the latest record capture wrote of it whose summary holds one of `kinds` (its unmap and
/// map-again records: other gap records of the same table, an UNLOGGED stretch or changes found unplaced,
/// say nothing of whether it is mapped), platform-wide and linked into the source's platform chain; latest
/// by chain position (records of starts that crashed before confirming share a commit position): where it
/// was placed and its summary, with how many such records the table has.
pub async fn last_table_gaps(
    ch: &clickhouse::Client,
    source_id: &str,
    kinds: [&str; 2],
) -> Result<std::collections::HashMap<String, (u64, u64, String)>> {
    Ok(last_table_gaps_query(ch, source_id, kinds)
        .fetch_all()
        .await?
        .into_iter()
        .map(|(t, n, lsn, summary)| (t, (n, lsn, summary)))
        .collect())
}

pub(crate) fn last_table_gaps_query(
    ch: &clickhouse::Client,
    source_id: &str,
    kinds: [&str; 2],
) -> Select<(String, u64, u64, String)> {
    Select::new(
        ch.query(
            "SELECT table_name, count(), argMax(commit_lsn, chain_seq), argMax(summary, chain_seq) FROM audit_items \
             WHERE source_id = ? AND action = ? AND table_name != '' AND platform_wide = 1 \
             AND organization_id = '' AND resource_id = ? AND chain_seq > 0 \
             AND (position(summary, ?) > 0 OR position(summary, ?) > 0) GROUP BY table_name",
        )
        .bind(source_id)
        .bind(crate::vocab::action::GAP)
        .bind(source_id)
        .bind(kinds[0])
        .bind(kinds[1]),
    )
}

/// Where each source's checkpoint signing was last turned off (chained records only).
pub(crate) fn signing_gaps_query(
    ch: &clickhouse::Client,
) -> Select<crate::audit::chain::SigningGap> {
    Select::new(
        ch.query(
            "SELECT source_id, lsn AS commit_lsn, t AS occurred_at_us FROM (SELECT source_id, \
             max(commit_lsn) AS lsn, argMax(occurred_at_us, commit_lsn) AS t FROM audit_items \
             WHERE action = ? AND platform_wide = 1 AND chain_seq > 0 \
             AND resource_id = concat(source_id, ?) GROUP BY source_id)",
        )
        .bind(crate::vocab::action::GAP)
        .bind(crate::audit::item::SIGNING_GAP_SUFFIX),
    )
}

pub(crate) fn last_gap_query(ch: &clickhouse::Client, source_id: &str) -> Select<(u64, i64)> {
    Select::new(
        ch.query(
            "SELECT count(), max(occurred_at_us) FROM audit_items WHERE source_id = ? AND action = ? \
             AND resource_id != ? AND resource_id != ?",
        )
        .bind(source_id)
        .bind(crate::vocab::action::GAP)
        // Signatures stopping, or attribution as of a restart, is no stretch of missing changes.
        .bind(crate::audit::item::signing_gap_resource(source_id))
        .bind(format!(
            "{source_id}{}",
            crate::audit::item::ATTRIBUTION_GAP_SUFFIX
        )),
    )
}

pub(crate) fn history_query(
    ch: &clickhouse::Client,
    source_id: &str,
    table: Option<&str>,
) -> Select<HistoryRow> {
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
    Select::new(q)
}

/// Each chain's head as of a position (items committed before it, and accepted gaps, which are written
/// before streaming from their position), with its last checkpoint: where linking resumes after a restart.
pub async fn chain_heads(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
    keys: &[crate::audit::chain::PublicKey],
    retained_from_us: i64,
) -> Result<std::collections::HashMap<String, crate::audit::chain::Head>> {
    use anyhow::Context;
    let heads = chain_heads_query(ch, source_id, before_lsn)
        .fetch_all()
        .await
        .context("reading the hash chains' heads from ClickHouse")?;
    let cps = checkpoint_heads_query(ch, source_id, before_lsn)
        .fetch_all()
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
                    newest_us: Some(h.newest_t),
                    // Unknown until a checkpoint says: the next item starts it.
                    signed_from: 0,
                    stored_checkpoint: None,
                    read_doubt: None,
                    last_item: Some((h.last_lsn, h.last_id, h.last_t)),
                },
            )
        })
        .collect();
    // Per chain, its newest stored checkpoint that verifies (rows come newest first, a few per chain): a
    // row written by hand above it is logged and passed over; none verifying is a doubt.
    let mut chosen: Vec<(crate::audit::chain::Checkpoint, Option<String>)> = Vec::new();
    for row in cps {
        let c = row.checkpoint();
        let signed = keys.is_empty() || keys.iter().any(|k| k.verifies(&c));
        match chosen.last_mut() {
            Some((have, d)) if have.organization_id == c.organization_id => {
                if d.is_some() && signed {
                    *have = c;
                    *d = None;
                }
                continue;
            }
            _ => {}
        }
        let doubt = (!signed).then(|| {
            tracing::error!(organization = %c.organization_id, chain_seq = c.chain_seq, key_id = %c.key_id, "a stored checkpoint does not verify under any configured key: written into the store by hand, or signed with a key integrity.trusted_keys lacks (waltrail verify names it)");
            format!(
                "its last stored checkpoints (from position {}) do not verify under any configured key: written by hand (or signed with a key integrity.trusted_keys lacks)",
                c.chain_seq
            )
        });
        chosen.push((c, doubt));
    }
    // The item at each checkpoint's position must be the one it signed: one altered and the chain linked
    // again after it (no key needed) must not be signed on from.
    let at: Vec<String> = chosen
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(c, _)| format!("{}:{}", c.organization_id, c.chain_seq))
        .collect();
    let stored_at: std::collections::HashMap<String, String> = if at.is_empty() {
        Default::default()
    } else {
        hashes_at_query(ch, source_id, &at)
            .fetch_all()
            .await
            .context("reading the items at the chains' last checkpoints from ClickHouse")?
            .into_iter()
            .collect()
    };
    // Chains whose last checkpoint lies past their stored rows, committed before the retention window:
    // retention explains it only when its day partition is gone (it drops partitions whole): one count
    // per such chain.
    let mut expired_tail = std::collections::HashSet::new();
    for (c, _) in &chosen {
        let past = out
            .get(&c.organization_id)
            .is_some_and(|h| c.chain_seq > h.seq && c.commit_time_us < retained_from_us);
        if past {
            let left = same_day_rows_query(ch, c.commit_time_us)
                .fetch_one()
                .await
                .context("reading what is left of a chain's expired day from ClickHouse")?;
            if left == 0 {
                expired_tail.insert(c.organization_id.clone());
            }
        }
    }
    for (c, read_doubt) in chosen {
        let key = format!("{}:{}", c.organization_id, c.chain_seq);
        let read_doubt = read_doubt.or_else(|| {
            stored_at
                .get(&key)
                .filter(|h| **h != c.head_hash)
                .map(|_| {
                    format!(
                        "the item at its last checkpoint's position {} is not the one the checkpoint signed: items up to there were altered",
                        c.chain_seq
                    )
                })
        });
        let signed = read_doubt.is_none();
        let stored = signed.then(|| {
            (
                c.chain_seq,
                c.head_hash.clone(),
                c.every_items,
                c.commit_lsn,
            )
        });
        match out.get_mut(&c.organization_id) {
            // The items up to the checkpoint were committed on days retention drops, while older rows of
            // the chain stay (their partition kept by an item stored later, a replication origin's or a
            // source catching up): the chain goes on from its checkpoint, as when all its items expired.
            Some(h) if signed && expired_tail.contains(&c.organization_id) => {
                h.seq = c.chain_seq;
                h.hash = c.head_hash.clone();
                h.checkpointed_seq = c.chain_seq;
                h.checkpointed_time_us = c.commit_time_us;
                h.newest_us = h.newest_us.max(Some(c.commit_time_us));
                h.signed_from = c.signed_from;
                h.stored_checkpoint = stored;
                h.read_doubt = None;
            }
            Some(h) => {
                h.checkpointed_seq = c.chain_seq.min(h.seq);
                h.checkpointed_time_us = c.commit_time_us;
                // Openings went on unbroken since the checkpoint's span began unless a day began after it
                // with no checkpoint (linked while no key was configured): then they start again.
                let day = |t: i64| t.div_euclid(crate::audit::chain::DAY_US);
                let unbroken = h.newest_us.is_none_or(|t| day(t) <= day(c.commit_time_us));
                h.signed_from = if unbroken { c.signed_from } else { 0 };
                h.stored_checkpoint = stored;
                h.read_doubt = read_doubt;
            }
            // Every item of the chain expired (retention), its checkpoints did not: the chain goes on from
            // its last checkpoint rather than from the zero hash, so its positions are never used twice (a
            // checkpoint of the old chain at a position of the new one would read as an alteration). The
            // items after that checkpoint expired with the rest; the next item is signed as opening after it.
            None if signed => {
                out.insert(
                    c.organization_id.clone(),
                    crate::audit::chain::Head {
                        seq: c.chain_seq,
                        hash: c.head_hash.clone(),
                        checkpointed_seq: c.chain_seq,
                        checkpointed_time_us: c.commit_time_us,
                        newest_us: Some(c.commit_time_us),
                        signed_from: c.signed_from,
                        stored_checkpoint: stored,
                        read_doubt: None,
                        last_item: None,
                    },
                );
            }
            None => {}
        }
    }
    Ok(out)
}

/// Where a resource was, by its last item in the trail before a position: for a delete that carried its
/// key alone (no REPLICA IDENTITY FULL), whose organization the WAL did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastScope {
    pub resource_id: String,
    pub organization_id: String,
    pub project_id: String,
    pub resource_display: String,
    /// The item's (commit position, place in its transaction).
    pub position: (u64, u32),
    /// The item is the copy in the scope the resource joined (sub 0). A move is recorded twice at one
    /// position, in the scope it joined and in the one it left: the position alone ties them.
    pub joined: bool,
}

impl LastScope {
    /// Whether this item tells where the resource was after `other` does: a later position, or at the same
    /// one the scope the resource joined rather than the one it left (ClickHouse returns tied rows in any
    /// order, and a held row list has the left copy last: either way the delete went where it was not).
    pub fn supersedes(&self, other: &LastScope) -> bool {
        (self.position, self.joined) > (other.position, other.joined)
    }
}

/// One stored item as [`last_scopes_query`] reads it; [`pick_last_scopes`] keeps one a resource.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub(crate) struct LastScopeRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    pub resource_id: String,
    pub commit_lsn: u64,
    pub seq: u32,
    pub organization_id: String,
    pub project_id: String,
    pub resource_display: String,
}

/// Each resource's scope from its latest items (`source_id`'s, in any order): the latest position, and
/// there the copy whose id is the one sub 0 has at that position (the scope joined). An id that does not
/// match its position is never taken for the joined copy, so a row cannot claim to be it.
pub(crate) fn pick_last_scopes(source_id: &str, rows: Vec<LastScopeRow>) -> Vec<LastScope> {
    let mut out: Vec<LastScope> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in rows {
        let joined = r.id == crate::audit::item::item_id(source_id, r.commit_lsn, r.seq, 0);
        let s = LastScope {
            resource_id: r.resource_id,
            organization_id: r.organization_id,
            project_id: r.project_id,
            resource_display: r.resource_display,
            position: (r.commit_lsn, r.seq),
            joined,
        };
        match at.get(&s.resource_id) {
            Some(&i) => {
                if s.supersedes(&out[i]) {
                    out[i] = s;
                }
            }
            None => {
                at.insert(s.resource_id.clone(), out.len());
                out.push(s);
            }
        }
    }
    out
}

/// How many resources one [`last_scopes`] query asks for at most (the ids travel as one array parameter,
/// in the query's text): each query reads the table's `resource_id` column, so fewer, larger ones are
/// cheaper.
pub const LAST_SCOPES_PER_QUERY: usize = 10_000;

/// How many bytes of ids one [`last_scopes`] query carries at most (one id longer than that goes alone):
/// ClickHouse refuses to parse a query over `max_query_size`, which each query raises to what it needs.
pub const LAST_SCOPES_BYTES_PER_QUERY: usize = 1 << 20;

/// `ids` cut into the look-ups [`last_scopes`] makes: at most [`LAST_SCOPES_PER_QUERY`] ids and
/// [`LAST_SCOPES_BYTES_PER_QUERY`] bytes each, or one id.
pub fn last_scopes_chunks(ids: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        let full = i - start >= LAST_SCOPES_PER_QUERY
            || (i > start && bytes + id.len() > LAST_SCOPES_BYTES_PER_QUERY);
        if full {
            out.push(&ids[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += id.len();
    }
    if start < ids.len() {
        out.push(&ids[start..]);
    }
    out
}

/// The last scope of each of `resource_ids` (of one table), by its last item before `before`: the (commit
/// position, place in its transaction) of the first item asking; an earlier item of the same transaction
/// counts. Resources the trail never placed are left out. One query for many deletes: a bulk delete
/// without the old rows asked once per row (≈ 50 rows/s); and a set, not `has()` over an array, which
/// compared every row with every id (≈ 2,000 rows/s).
pub async fn last_scopes(
    ch: &clickhouse::Client,
    source_id: &str,
    table_name: &str,
    resource_ids: &[String],
    before: (u64, u32),
) -> Result<Vec<LastScope>> {
    let rows = last_scopes_query(ch, source_id, table_name, resource_ids, before)
        .fetch_all()
        .await?;
    Ok(pick_last_scopes(source_id, rows))
}

/// Each resource's two latest items, each once (its earliest stored copy: a replay's second copy must not
/// take the other place). A move's two copies share its position, so both come and [`pick_last_scopes`]
/// chooses between them (`LIMIT 1 BY resource_id` took either, at random).
pub(crate) fn last_scopes_query(
    ch: &clickhouse::Client,
    source_id: &str,
    table_name: &str,
    resource_ids: &[String],
    before: (u64, u32),
) -> Select<LastScopeRow> {
    Select::new(
        ch.query(
            "SELECT id, resource_id, commit_lsn, seq, organization_id, project_id, resource_display \
             FROM (SELECT id, resource_id, commit_lsn, seq, organization_id, project_id, resource_display \
             FROM audit_items \
             WHERE source_id = ? AND table_name = ? AND resource_id IN (SELECT arrayJoin(?)) \
             AND platform_wide = 0 AND (commit_lsn < ? OR (commit_lsn = ? AND seq < ?)) \
             ORDER BY commit_lsn DESC, seq DESC, version DESC LIMIT 1 BY resource_id, id) \
             ORDER BY commit_lsn DESC, seq DESC LIMIT 2 BY resource_id",
        )
        .bind(source_id)
        .bind(table_name)
        .bind(resource_ids)
        .bind(before.0)
        .bind(before.0)
        .bind(before.1)
        .with_setting("max_query_size", query_size_for(resource_ids)),
    )
}

/// `max_query_size` for a query carrying `values` in its text (the client binds parameters into it):
/// room for each escaped in full (at worst twice its length) and for the rest, never below ClickHouse's
/// default. An array from the source's data (ids, organizations) is otherwise refused past 256 KiB, and
/// the statement retried for ever.
fn query_size_for(values: &[String]) -> String {
    (2 * values.iter().map(String::len).sum::<usize>() + (64 << 10))
        .max(256 << 10)
        .to_string()
}

#[derive(clickhouse::Row, Deserialize)]
pub(crate) struct ChainHeadRow {
    chain: String,
    seq: u64,
    hash: String,
    first_t: i64,
    newest_t: i64,
    last_lsn: u64,
    last_id: String,
    last_t: i64,
}

/// How many rows (of any chain or source) the day partition of a commit time holds: retention drops a
/// partition whole, so one row left means it was not dropped (the partition key's own expression, so the
/// server's time zone decides as it does for retention).
pub(crate) fn same_day_rows_query(ch: &clickhouse::Client, commit_time_us: i64) -> Select<u64> {
    Select::new(
        ch.query(
            "SELECT count() FROM audit_items WHERE toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000))) \
             = toYYYYMMDD(toDateTime(intDiv(?, 1000000)))",
        )
        .bind(commit_time_us),
    )
}

/// Each chain's head as of a position, for [`chain_heads`].
pub(crate) fn chain_heads_query(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Select<ChainHeadRow> {
    Select::new(
        ch.query(
            "SELECT if(platform_wide = 1, '', organization_id) AS chain, max(chain_seq) AS seq, \
             argMax(chain_hash, chain_seq) AS hash, min(occurred_at_us) AS first_t, \
             max(occurred_at_us) AS newest_t, argMax(commit_lsn, chain_seq) AS last_lsn, \
             toString(argMax(id, chain_seq)) AS last_id, argMax(occurred_at_us, chain_seq) AS last_t FROM audit_items \
             WHERE source_id = ? AND chain_seq > 0 AND (commit_lsn < ? OR action = ?) GROUP BY chain",
        )
        .bind(source_id)
        .bind(before_lsn)
        .bind(crate::vocab::action::GAP),
    )
}

/// The stored hashes of a source's items at given places (`chain:position`), keyed the same way.
pub(crate) fn hashes_at_query(
    ch: &clickhouse::Client,
    source_id: &str,
    at: &[String],
) -> Select<(String, String)> {
    Select::new(
        ch.query(
            "SELECT concat(if(platform_wide = 1, '', organization_id), ':', toString(chain_seq)) AS at, \
             any(chain_hash) FROM audit_items WHERE source_id = ? AND chain_seq > 0 AND has(?, at) GROUP BY at",
        )
        .bind(source_id)
        .bind(at)
        .with_setting("max_query_size", query_size_for(at)),
    )
}

/// Each chain's last checkpoints as of a position (a few, newest first), as stored, for [`chain_heads`].
pub(crate) fn checkpoint_heads_query(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Select<crate::store::row::CheckpointRow> {
    Select::new(
        ch.query(
            "SELECT ?fields FROM audit_checkpoints WHERE source_id = ? AND commit_lsn < ? \
             ORDER BY organization_id, chain_seq DESC LIMIT 16 BY organization_id",
        )
        .bind(source_id)
        .bind(before_lsn),
    )
}

/// Where the items of a source stored from a position on are, in stream order (commit position, then
/// place in the transaction), with a bound on each one's size, at most `limit`: how a replay after a
/// restart cuts what it reads back into pages of bounded memory, whatever the items hold.
pub async fn stored_sizes(
    ch: &clickhouse::Client,
    source_id: &str,
    from: (u64, u32),
    through_lsn: u64,
    limit: u64,
) -> Result<Vec<StoredSize>> {
    use anyhow::Context;
    stored_sizes_query(ch, source_id, from, through_lsn, limit)
        .fetch_all()
        .await
        .context("reading where the items a replay finds already stored are")
}

#[derive(clickhouse::Row, Deserialize)]
pub struct StoredSize {
    pub commit_lsn: u64,
    pub seq: u32,
    pub bytes: u64,
}

/// The stored items of a source between two positions of the stream (`from` included, `until` excluded,
/// or up to `through_lsn`): what a replay after a restart finds already stored. One copy per id, the one
/// merges keep (the earliest ingestion has the highest version).
pub async fn stored_between(
    ch: &clickhouse::Client,
    source_id: &str,
    from: (u64, u32),
    until: Option<(u64, u32)>,
    through_lsn: u64,
) -> Result<Vec<ReadRow>> {
    use anyhow::Context;
    stored_between_query(ch, source_id, from, until, through_lsn)
        .fetch_all()
        .await
        .context("reading the items a replay finds already stored")
}

/// The columns of an item whose size does not vary (ids, numbers).
const FIXED_SIZE_COLUMNS: [&str; 10] = [
    "id",
    "event_id",
    "occurred_at_us",
    "ingested_at_us",
    "commit_lsn",
    "xid",
    "seq",
    "platform_wide",
    "chain_seq",
    "version",
];

/// Items of `source_id` at or after `from` in stream order, up to `through_lsn`, and not gap markers.
const STORED_FROM: &str =
    "source_id = ? AND action != ? AND (commit_lsn > ? OR (commit_lsn = ? AND seq >= ?)) \
                           AND commit_lsn <= ?";

fn bind_stored_from(
    q: clickhouse::query::Query,
    source_id: &str,
    from: (u64, u32),
    through_lsn: u64,
) -> clickhouse::query::Query {
    q.bind(source_id)
        .bind(crate::vocab::action::GAP)
        .bind(from.0)
        .bind(from.0)
        .bind(from.1)
        .bind(through_lsn)
}

pub(crate) fn stored_sizes_query(
    ch: &clickhouse::Client,
    source_id: &str,
    from: (u64, u32),
    through_lsn: u64,
    limit: u64,
) -> Select<StoredSize> {
    // Every variable-length column counts (values are cut at `max_value_bytes`, but a row has many, and a
    // row altered in ClickHouse need not respect any bound), plus the fixed-size ones.
    let strings: Vec<String> = <ReadRow as clickhouse::Row>::COLUMN_NAMES
        .iter()
        .filter(|c| !FIXED_SIZE_COLUMNS.contains(c))
        .map(|c| match *c {
            "changed_fields" => {
                "length(arrayStringConcat(changed_fields)) + 8 * length(changed_fields)".to_owned()
            }
            c => format!("length({c})"),
        })
        .collect();
    // The next positions first (narrow columns), then the sizes of their items only: computed in the
    // outer query for every row of the window, they would read the whole window's values for each page.
    // GLOBAL: on a cluster the positions are found across shards once (plain IN would be refused there).
    let sql = format!(
        "SELECT commit_lsn, seq, {} + 256 AS bytes FROM audit_items WHERE {STORED_FROM} \
         AND (commit_lsn, seq) GLOBAL IN (SELECT commit_lsn, seq FROM audit_items WHERE {STORED_FROM} \
         ORDER BY commit_lsn, seq LIMIT ?) ORDER BY commit_lsn, seq",
        strings.join(" + ")
    );
    let q = bind_stored_from(ch.query(&sql), source_id, from, through_lsn);
    Select::new(bind_stored_from(q, source_id, from, through_lsn).bind(limit))
}

pub(crate) fn stored_between_query(
    ch: &clickhouse::Client,
    source_id: &str,
    from: (u64, u32),
    until: Option<(u64, u32)>,
    through_lsn: u64,
) -> Select<ReadRow> {
    let sql = format!(
        "SELECT ?fields FROM audit_items WHERE {STORED_FROM}{} ORDER BY commit_lsn, seq, id, version DESC \
         LIMIT 1 BY id",
        if until.is_some() {
            " AND (commit_lsn < ? OR (commit_lsn = ? AND seq < ?))"
        } else {
            ""
        }
    );
    let mut q = bind_stored_from(ch.query(&sql), source_id, from, through_lsn);
    if let Some(u) = until {
        q = q.bind(u.0).bind(u.0).bind(u.1);
    }
    Select::new(q)
}

/// One chain's items in chain order (the organization's own, or the platform chain for ''), between
/// commit times when given, for verification.
pub async fn chain_rows(
    ch: &clickhouse::Client,
    chain: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<ReadRow>> {
    Ok(one_copy_each(
        chain_rows_query(ch, chain, since_us, until_us)
            .fetch_all()
            .await?,
    ))
}

/// Rows in chain order (copies of an item adjacent, highest version first) with the copies merges will
/// fold into one (same id and sorting key: organization and commit time) folded now, as merges would,
/// into the one they keep. A copy under another sorting key is never folded by merges, and reads may
/// show either (QA48 H3): both stay, and verification fails on them.
fn one_copy_each(rows: Vec<ReadRow>) -> Vec<ReadRow> {
    let mut out: Vec<ReadRow> = Vec::with_capacity(rows.len());
    for r in rows {
        let folded = out.last().is_some_and(|p| {
            p.id == r.id
                && p.chain_seq == r.chain_seq
                && p.source_id == r.source_id
                && p.organization_id == r.organization_id
                && p.occurred_at_us == r.occurred_at_us
        });
        if !folded {
            out.push(r);
        }
    }
    out
}

pub(crate) fn chain_rows_query(
    ch: &clickhouse::Client,
    chain: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Select<ReadRow> {
    Select::new(chain_scope(
        ch,
        "?fields",
        "chain_seq > 0",
        chain,
        (since_us, until_us),
        "ORDER BY source_id, chain_seq, id, version DESC",
    ))
}

/// One source's items of a chain between two chain positions (inclusive), whatever their times: the
/// positions a time range left out between items it holds (an upstream clock ahead across midnight puts a
/// later item inside the range and an earlier one outside).
pub async fn chain_rows_between(
    ch: &clickhouse::Client,
    chain: &str,
    source_id: &str,
    (lo, hi): (u64, u64),
) -> Result<Vec<ReadRow>> {
    Ok(one_copy_each(
        chain_rows_between_query(ch, chain, source_id, (lo, hi))
            .fetch_all()
            .await?,
    ))
}

pub(crate) fn chain_rows_between_query(
    ch: &clickhouse::Client,
    chain: &str,
    source_id: &str,
    (lo, hi): (u64, u64),
) -> Select<ReadRow> {
    let q = chain_scope(
        ch,
        "?fields",
        "source_id = ? AND chain_seq >= ? AND chain_seq <= ?",
        chain,
        (None, None),
        "ORDER BY source_id, chain_seq, id, version DESC",
    );
    // The condition's binds follow the scope's own.
    Select::new(q.bind(source_id).bind(lo).bind(hi))
}

/// A query over one chain's items: an organization's own, or the platform chain's ('': platform-wide
/// items and those of no organization, as `Chainer::chain_of` links them), between commit times when given.
fn chain_scope(
    ch: &clickhouse::Client,
    fields: &str,
    condition: &str,
    chain: &str,
    (since_us, until_us): (Option<i64>, Option<i64>),
    tail: &str,
) -> clickhouse::query::Query {
    let scope = if chain.is_empty() {
        "(platform_wide = 1 OR organization_id = ?)"
    } else {
        "organization_id = ? AND platform_wide = 0"
    };
    let mut sql = format!("SELECT {fields} FROM audit_items WHERE {scope} AND {condition}");
    // An item whose commit time is older than the range (a replication origin's) but stored within it sits
    // inside the chain there: it belongs to the range, or its position would read as deleted.
    if since_us.is_some() {
        sql.push_str(" AND (occurred_at_us >= ? OR ingested_at_us >= ?)");
    }
    if until_us.is_some() {
        sql.push_str(" AND occurred_at_us < ?");
    }
    sql.push(' ');
    sql.push_str(tail);
    let mut q = ch.query(&sql).bind(chain);
    if let Some(s) = since_us {
        q = q.bind(s).bind(s);
    }
    if let Some(u) = until_us {
        q = q.bind(u);
    }
    q
}

/// The first item of a chain's scope, between commit times when given, that carries no chain fields: in a
/// chained store, an item written into it by hand (or stored while `integrity.chain` was off).
pub async fn first_unchained(
    ch: &clickhouse::Client,
    chain: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Option<String>> {
    Ok(unchained_query(ch, chain, since_us, until_us)
        .fetch_all()
        .await?
        .into_iter()
        .next())
}

pub(crate) fn unchained_query(
    ch: &clickhouse::Client,
    chain: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Select<String> {
    Select::new(chain_scope(
        ch,
        "toString(id)",
        "chain_seq = 0",
        chain,
        (since_us, until_us),
        "ORDER BY occurred_at_us, id LIMIT 1",
    ))
}

/// Whether the platform chain holds items of no organization (an empty organization column, not
/// platform-wide): no organization sees them, so its exports do not hold that chain whole.
pub async fn has_unscoped_items(ch: &clickhouse::Client) -> Result<bool> {
    Ok(!unscoped_items_query(ch).fetch_all().await?.is_empty())
}

pub(crate) fn unscoped_items_query(ch: &clickhouse::Client) -> Select<u8> {
    Select::new(ch.query(
        "SELECT toUInt8(1) FROM audit_items WHERE organization_id = '' AND platform_wide = 0 AND chain_seq > 0 LIMIT 1",
    ))
}

/// The end of a range of checkpoints held to rosters: committed a minute ago or more (a signed time, unlike
/// when it was stored), so the roster a checkpoint names or came beside, stored right after it in the same
/// batch, is there by then.
fn settled_until(until_us: Option<i64>) -> i64 {
    until_us
        .unwrap_or(i64::MAX)
        .min(now_us().saturating_sub(60_000_000))
}

/// A source's last roster as of a position (its number and commit time): where its rosters go on from.
pub async fn last_roster(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Result<Option<(u64, i64)>> {
    Ok(last_roster_query(ch, source_id, before_lsn)
        .fetch_all()
        .await?
        .into_iter()
        .next())
}

pub(crate) fn last_roster_query(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Select<(u64, i64)> {
    Select::new(
        ch.query(
            "SELECT roster_seq, commit_time_us FROM audit_rosters WHERE source_id = ? AND commit_lsn < ? \
             ORDER BY roster_seq DESC LIMIT 1",
        )
        .bind(source_id)
        .bind(before_lsn),
    )
}

/// Every source's rosters committed in a range, headers only, with the entries of each source's newest full
/// roster and of the rosters of new chains after it: what [`crate::audit::chain::check_rosters`] holds the
/// chains to.
pub async fn rosters(
    ch: &clickhouse::Client,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<crate::audit::chain::Roster>> {
    let rows = roster_headers_query(ch, since_us, until_us)
        .fetch_all()
        .await?;
    let mut out: Vec<crate::audit::chain::Roster> = rows.iter().map(|r| r.roster()).collect();
    let mut newest_full: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in rows.iter().filter(|r| r.full != 0) {
        let e = newest_full.entry(r.source_id.as_str()).or_default();
        *e = (*e).max(r.roster_seq);
    }
    let mut sources: Vec<&str> = rows.iter().map(|r| r.source_id.as_str()).collect();
    sources.dedup();
    // One query per source: its newest full roster and every one after it, entries and all.
    for source in sources {
        let from = newest_full.get(source).copied().unwrap_or(0);
        for f in roster_query(ch, source, from).fetch_all().await? {
            if let Some(slot) = out
                .iter_mut()
                .find(|r| r.source_id == source && r.roster_seq == f.roster_seq)
            {
                *slot = f.roster();
            }
        }
    }
    Ok(out)
}

pub(crate) fn roster_headers_query(
    ch: &clickhouse::Client,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Select<crate::store::row::RosterRow> {
    Select::new(
        ch.query(
            "SELECT source_id, roster_seq, commit_lsn, commit_time_us, '' AS chains, chains_sha256, full, \
             key_id, signature, stored_at_us FROM audit_rosters WHERE commit_time_us >= ? AND commit_time_us < ? \
             ORDER BY source_id, roster_seq LIMIT 1 BY source_id, roster_seq",
        )
        .bind(since_us.unwrap_or(i64::MIN))
        .bind(until_us.unwrap_or(i64::MAX)),
    )
}

/// Each source's checkpoint that names the highest roster number, committed in a range.
pub async fn roster_claims(
    ch: &clickhouse::Client,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<crate::audit::chain::Checkpoint>> {
    Ok(roster_claims_query(ch, since_us, until_us)
        .fetch_all()
        .await?
        .iter()
        .map(|r| r.checkpoint())
        .collect())
}

pub(crate) fn roster_claims_query(
    ch: &clickhouse::Client,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Select<crate::store::row::CheckpointRow> {
    Select::new(
        ch.query(
            "SELECT ?fields FROM audit_checkpoints WHERE format >= 2 AND commit_time_us >= ? AND commit_time_us < ? \
             ORDER BY source_id, roster_seq DESC LIMIT 1 BY source_id",
        )
        .bind(since_us.unwrap_or(i64::MIN))
        .bind(settled_until(until_us)),
    )
}

/// The highest roster number a stored checkpoint of a source names, as of a position (with the row, to
/// verify it).
pub async fn source_roster_claim(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Result<Option<crate::audit::chain::Checkpoint>> {
    Ok(source_roster_claim_query(ch, source_id, before_lsn)
        .fetch_all()
        .await?
        .first()
        .map(|r| r.checkpoint()))
}

pub(crate) fn source_roster_claim_query(
    ch: &clickhouse::Client,
    source_id: &str,
    before_lsn: u64,
) -> Select<crate::store::row::CheckpointRow> {
    Select::new(
        ch.query(
            "SELECT ?fields FROM audit_checkpoints WHERE source_id = ? AND format >= 2 AND commit_lsn < ? \
             ORDER BY roster_seq DESC LIMIT 1",
        )
        .bind(source_id)
        .bind(before_lsn),
    )
}

/// Each source's highest stored roster number.
pub async fn roster_max(ch: &clickhouse::Client) -> Result<std::collections::HashMap<String, u64>> {
    Ok(roster_max_query(ch)
        .fetch_all()
        .await?
        .into_iter()
        .collect())
}

pub(crate) fn roster_max_query(ch: &clickhouse::Client) -> Select<(String, u64)> {
    Select::new(ch.query("SELECT source_id, max(roster_seq) FROM audit_rosters GROUP BY source_id"))
}

/// A source's rosters from a number on, entries and all.
pub(crate) fn roster_query(
    ch: &clickhouse::Client,
    source_id: &str,
    from_seq: u64,
) -> Select<crate::store::row::RosterRow> {
    Select::new(
        ch.query(
            "SELECT ?fields FROM audit_rosters WHERE source_id = ? AND roster_seq >= ? \
             ORDER BY roster_seq LIMIT 1 BY roster_seq",
        )
        .bind(source_id)
        .bind(from_seq),
    )
}

/// The sources that signed checkpoints in format 2 (which came with rosters) in a range, committed at
/// least a minute ago.
pub async fn roster_sources(
    ch: &clickhouse::Client,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<String>> {
    Ok(roster_sources_query(ch, since_us, until_us)
        .fetch_all()
        .await?)
}

pub(crate) fn roster_sources_query(
    ch: &clickhouse::Client,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Select<String> {
    Select::new(
        ch.query(
            "SELECT DISTINCT source_id FROM audit_checkpoints WHERE format >= 2 AND roster_seq > 0 AND commit_time_us >= ? \
             AND commit_time_us < ? ORDER BY source_id",
        )
        .bind(since_us.unwrap_or(i64::MIN))
        .bind(settled_until(until_us)),
    )
}

/// Every checkpoint of one source, by chain and position: what an external copy should hold.
pub async fn source_checkpoints(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Result<Vec<crate::store::row::CheckpointRow>> {
    Ok(source_checkpoints_query(ch, source_id).fetch_all().await?)
}

pub(crate) fn source_checkpoints_query(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Select<crate::store::row::CheckpointRow> {
    Select::new(
        ch.query("SELECT ?fields FROM audit_checkpoints WHERE source_id = ? ORDER BY organization_id, chain_seq LIMIT 1 BY organization_id, chain_seq")
        .bind(source_id),
    )
}

/// How many checkpoints of a source the store holds, and the ids of the keys that signed them.
pub async fn checkpoint_keys(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Result<(u64, Vec<String>)> {
    let rows = checkpoint_keys_query(ch, source_id).fetch_all().await?;
    Ok((
        rows.iter().map(|(_, n)| n).sum(),
        rows.into_iter().map(|(k, _)| k).collect(),
    ))
}

pub(crate) fn checkpoint_keys_query(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Select<(String, u64)> {
    Select::new(
        ch.query(
            "SELECT key_id, count() FROM audit_checkpoints WHERE source_id = ? GROUP BY key_id ORDER BY key_id",
        )
        .bind(source_id),
    )
}

/// The checkpoints of one chain.
pub async fn checkpoints(
    ch: &clickhouse::Client,
    chain: &str,
) -> Result<Vec<crate::store::row::CheckpointRow>> {
    Ok(checkpoints_query(ch, chain).fetch_all().await?)
}

pub(crate) fn checkpoints_query(
    ch: &clickhouse::Client,
    chain: &str,
) -> Select<crate::store::row::CheckpointRow> {
    Select::new(
        ch.query("SELECT ?fields FROM audit_checkpoints WHERE organization_id = ? ORDER BY source_id, chain_seq LIMIT 1 BY source_id, chain_seq")
        .bind(chain),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_scopes_chunks_are_bounded_by_count_and_bytes() {
        let short: Vec<String> = (0..25_001).map(|i| i.to_string()).collect();
        let sizes: Vec<usize> = last_scopes_chunks(&short).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![10_000, 10_000, 5_001]);
        // 2 KB ids: 512 fit in 1 MiB.
        let long: Vec<String> = (0..1_100).map(|i| format!("{i:0>2048}")).collect();
        let chunks = last_scopes_chunks(&long);
        assert!(chunks
            .iter()
            .all(|c| c.iter().map(String::len).sum::<usize>() <= 1 << 20));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 1_100);
        assert_eq!(chunks[0].len(), 512);
        // One id over the budget goes alone, between its neighbours' chunks.
        let mixed = vec!["a".to_owned(), "x".repeat(2 << 20), "b".to_owned()];
        let sizes: Vec<usize> = last_scopes_chunks(&mixed).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(last_scopes_chunks(&[]).is_empty());
    }

    /// QA48a H1: a move's two copies tie on position; the copy in the scope the resource joined is taken
    /// whichever order ClickHouse returns them in, and a later item still wins over both.
    #[test]
    fn a_resource_last_scope_is_the_scope_its_move_joined() {
        let row = |r: &str, lsn: u64, seq: u32, sub: u32, org: &str| LastScopeRow {
            id: crate::audit::item::item_id("s", lsn, seq, sub),
            resource_id: r.to_owned(),
            commit_lsn: lsn,
            seq,
            organization_id: org.to_owned(),
            project_id: String::new(),
            resource_display: String::new(),
        };
        let orgs = |rows: Vec<LastScopeRow>| {
            let mut out: Vec<(String, String)> = pick_last_scopes("s", rows)
                .into_iter()
                .map(|s| (s.resource_id, s.organization_id))
                .collect();
            out.sort();
            out
        };
        let joined_first = vec![row("a", 10, 2, 0, "new"), row("a", 10, 2, 1, "old")];
        let left_first = vec![row("a", 10, 2, 1, "old"), row("a", 10, 2, 0, "new")];
        let want = vec![("a".to_owned(), "new".to_owned())];
        assert_eq!(orgs(joined_first), want);
        assert_eq!(orgs(left_first), want);
        // A later item (in any order), and another resource beside it.
        let rows = vec![
            row("a", 10, 2, 1, "old"),
            row("b", 9, 0, 0, "b_org"),
            row("a", 11, 0, 0, "later"),
        ];
        assert_eq!(
            orgs(rows),
            vec![
                ("a".to_owned(), "later".to_owned()),
                ("b".to_owned(), "b_org".to_owned())
            ]
        );
        // An id that is not sub 0's at its position is not taken for the joined copy.
        let mut forged = row("a", 10, 2, 1, "forged");
        forged.id = crate::audit::item::item_id("s", 10, 3, 0);
        let rows = vec![row("a", 10, 2, 0, "new"), forged];
        assert_eq!(orgs(rows), want);
    }

    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn pos(lsn: u64, seq: u32, id: u128) -> Position {
        Position {
            commit_lsn: lsn,
            seq,
            id: Uuid::from_u128(id),
        }
    }

    /// Source ids are config strings: none of these characters may confuse the cursor.
    const ODD_SOURCES: [&str; 5] = [
        "db:one",
        "a,b",
        "quote\"d 'source'",
        "ünïcødé/数据库",
        "v2:a:1:2:3",
    ];

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::from_u128(42);
        let mut asc = AscCursor::starting_now();
        for (i, s) in ODD_SOURCES.iter().enumerate() {
            assert!(asc.advance(s, pos(9 + i as u64, 2, 42), -5 - i as i64));
        }
        let mut from_old = asc.clone();
        from_old.others_since_us = None;
        from_old.others_after = Some(pos(u64::MAX, u32::MAX, u128::MAX));
        for c in [
            Cursor::Desc {
                occurred_at_us: 123,
                id,
            },
            Cursor::Asc(AscCursor::default()),
            Cursor::Asc(asc.clone()),
            Cursor::Asc(from_old),
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        let Cursor::Asc(back) = Cursor::decode(&Cursor::Asc(asc.clone()).encode()).unwrap() else {
            panic!("asc");
        };
        let mut names: Vec<&str> = back.sources.iter().map(|s| s.source_id.as_str()).collect();
        names.sort();
        let mut want = ODD_SOURCES.to_vec();
        want.sort();
        assert_eq!(names, want, "every source id comes back whole");

        let good = asc.to_bytes();
        let mut bad: Vec<String> = vec![
            "".into(),
            "!!!".into(),
            "djE6ZDp4Onk".into(),
            "'; DROP TABLE audit_items; --".into(),
            b64(b"v3:"),
            b64(b"v4:\x00\x00"),
            // With a byte more.
            b64(&[&good[..], b"x"].concat()),
            "A".repeat(MAX_CURSOR_TEXT + 1),
        ];
        // Cut short anywhere.
        bad.extend((0..good.len()).map(|n| b64(&good[..n])));
        // Unknown flags.
        let mut flags = good.clone();
        flags[3] |= 4;
        bad.push(b64(&flags));
        // Two sources out of order, or the same one twice.
        let two = |a: &str, b: &str| {
            let mut b3 = b"v3:\x00\x02".to_vec();
            for s in [a, b] {
                b3.push(s.len() as u8);
                b3.extend_from_slice(s.as_bytes());
                put_position(&mut b3, &pos(1, 0, 1));
                b3.extend_from_slice(&0i64.to_le_bytes());
            }
            b3
        };
        assert!(AscCursor::from_bytes(&two("a", "b")).is_some());
        bad.push(b64(&two("b", "a")));
        bad.push(b64(&two("a", "a")));
        // A source id that is not UTF-8.
        let mut not_utf8 = two("a", "b");
        not_utf8[6] = 0xff;
        bad.push(b64(&not_utf8));
        // An empty one is a source id like any other (sorted first).
        assert!(AscCursor::from_bytes(&two("", "b")).is_some());
        bad.push(b64(&two("b", "")));
        // More sources than a cursor may carry.
        let mut many = b"v3:\x00".to_vec();
        many.push(MAX_CURSOR_SOURCES as u8 + 1);
        for i in 0..=MAX_CURSOR_SOURCES {
            let s = format!("s{i:03}");
            many.push(s.len() as u8);
            many.extend_from_slice(s.as_bytes());
            put_position(&mut many, &pos(1, 0, 1));
            many.extend_from_slice(&0i64.to_le_bytes());
        }
        bad.push(b64(&many));
        for s in &bad {
            let e = Cursor::decode(s).expect_err(s);
            assert_eq!(e.to_string(), "not a cursor this API issued", "{s}");
        }
    }

    #[test]
    fn old_asc_cursors_are_one_position_for_every_source() {
        let id = Uuid::from_u128(7);
        for v in ["v1", "v2"] {
            let old = b64(format!("{v}:a:100:3:{id}:5000").as_bytes());
            let Cursor::Asc(c) = Cursor::decode(&old).unwrap() else {
                panic!("an asc cursor");
            };
            assert!(c.sources.is_empty());
            assert_eq!(c.others_after, Some(pos(100, 3, 7)));
            assert_eq!(c.others_since_us, Some(5000));
        }
    }

    #[test]
    fn a_cursor_moves_forward_per_source_and_is_bounded() {
        let mut c = AscCursor::default();
        assert!(c.advance("b", pos(10, 0, 1), 100));
        assert!(c.advance("a", pos(5, 0, 1), 90));
        assert!(c.advance("b", pos(20, 1, 1), 110));
        // An older position of a source never moves it back.
        assert!(c.advance("b", pos(15, 0, 1), 120));
        let got: Vec<(&str, Position, i64)> = c
            .sources
            .iter()
            .map(|s| (s.source_id.as_str(), s.at, s.ingested_at_us))
            .collect();
        assert_eq!(got, [("a", pos(5, 0, 1), 90), ("b", pos(20, 1, 1), 110)]);
        assert!(
            c.advance("", pos(1, 0, 1), 1),
            "items without a source id are followed too"
        );
        assert!(!c.advance(&"x".repeat(MAX_SOURCE_ID_BYTES + 1), pos(1, 0, 1), 1));
        assert!(c.advance(&"x".repeat(MAX_SOURCE_ID_BYTES), pos(1, 0, 1), 1));
        for i in c.sources.len()..MAX_CURSOR_SOURCES {
            assert!(c.advance(&format!("s{i:03}"), pos(1, 0, 1), 1));
        }
        assert!(!c.advance("one-too-many", pos(1, 0, 1), 1));
        assert!(
            c.advance("a", pos(6, 0, 1), 1),
            "a known source still moves"
        );
        // The fullest cursor, with the longest ids, fits in a request.
        let mut full = AscCursor::starting_now();
        full.others_after = Some(pos(1, 1, 1));
        for i in 0..MAX_CURSOR_SOURCES {
            let s = format!("{i:03}{}", "é".repeat((MAX_SOURCE_ID_BYTES - 3) / 2));
            assert!(full.advance(&s, pos(u64::MAX, u32::MAX, u128::MAX), i64::MIN));
        }
        let text = Cursor::Asc(full.clone()).encode();
        assert!(text.len() <= MAX_CURSOR_TEXT, "{}", text.len());
        assert_eq!(Cursor::decode(&text).unwrap(), Cursor::Asc(full));
    }

    #[test]
    fn the_asc_condition_has_a_branch_per_source_and_one_for_the_others() {
        let scope = Scope {
            org_id: "o".into(),
            projects: None,
            include_org_level: false,
        };
        let mut c = AscCursor::default();
        c.advance("s1", pos(10, 0, 1), 5 * ASC_LOOKBACK_US);
        c.advance("s2", pos(20, 0, 1), 3 * ASC_LOOKBACK_US);
        let mut w = Where::new(&scope, 30);
        let before = w.clauses.len();
        w.cursor(&Cursor::Asc(c.clone()));
        let added = w.clauses[before..].join(" AND ");
        assert_eq!(added.matches("source_id = ?").count(), 2, "{added}");
        assert!(added.contains("NOT has(?, source_id)"), "{added}");
        // Without a bound for the other sources, no overall ingestion bound either.
        assert!(!added.starts_with("ingested_at_us >= ?"), "{added}");
        assert_eq!(
            w.clauses
                .iter()
                .map(|c| c.matches('?').count())
                .sum::<usize>(),
            w.binds.len()
        );
        c.others_since_us = Some(4 * ASC_LOOKBACK_US);
        let mut w = Where::new(&scope, 30);
        let binds_before = w.binds.len();
        w.cursor(&Cursor::Asc(c));
        assert_eq!(w.clauses[before], "ingested_at_us >= ?");
        assert!(
            matches!(w.binds[binds_before], Bind::I(t) if t == 2 * ASC_LOOKBACK_US),
            "the lowest of the sources' bounds"
        );
        assert_eq!(
            w.clauses
                .iter()
                .map(|c| c.matches('?').count())
                .sum::<usize>(),
            w.binds.len()
        );
        // Nothing to hold to: no condition at all.
        let mut w = Where::new(&scope, 30);
        w.cursor(&Cursor::Asc(AscCursor::default()));
        assert_eq!(w.clauses.len(), before);
    }
}

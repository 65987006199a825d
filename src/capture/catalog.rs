//! Reading Postgres's catalog: what a configured table looks like, the types of its columns, the slot's
//! state, and plain snapshots of the platform tables attribution keeps in memory.
//!
//! Everything here returns plain rows; what they mean for auditing is decided by `audit`.

use anyhow::{anyhow, Result};
use std::collections::HashMap;
use tokio_postgres::Client;

use crate::capture::Lsn;
use crate::pg::{error_text, qualified, quote_ident};

/// What the catalog says of one configured table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub schema: String,
    pub table: String,
    pub exists: bool,
    /// The table's OID: pgoutput's relation id for it.
    pub oid: u32,
    /// 'd', 'n', 'f' or 'i'.
    pub replica_identity: char,
    pub primary_key: Vec<String>,
    pub columns: Vec<String>,
    /// Each column's number (`pg_attribute.attnum`, beside `columns`): kept by a rename, never reused after
    /// a drop, and higher than every earlier one for a column added. Empty when not read.
    pub attnums: Vec<i16>,
    /// The numbers of the columns dropped from the table (Postgres keeps them, nameless): a redacted column
    /// remembered under such a number was dropped, not renamed nor misspelt.
    pub dropped_attnums: Vec<i16>,
    /// Generated columns: Postgres (15) never sends them in logical replication.
    pub generated: Vec<String>,
    /// A partitioned table (its rows live in partitions).
    pub partitioned: bool,
    /// Each column's type (beside `columns`): its OID, a domain's base type's instead (one level), and
    /// its `pg_type.typcategory` (a domain has its base type's). Empty when not read.
    pub column_types: Vec<(u32, char)>,
    /// The columns declared NOT NULL (a soft-delete column among them never changes to or from NULL).
    pub not_null: Vec<String>,
    pub owned_by_us: bool,
    /// Partitions (of a partitioned table) and inheritance children not at REPLICA IDENTITY FULL: each has
    /// its own (a child without one makes Postgres refuse the platform's updates and deletes on it once
    /// it is published).
    pub partitions_not_full: Vec<(String, String)>,
}

/// `WITH RECURSIVE down(relid)`: the relations `seed` selects (one oid column) and, at every level below
/// them, their partitions and inheritance children however recent — those whose `pg_class` row `k`
/// satisfies `below` (`TRUE`: all). Every walk down the mapped tables' members starts here, so that all
/// agree on what a member is.
pub(crate) fn descendants(seed: &str, below: &str) -> String {
    format!(
        "WITH RECURSIVE down(relid) AS ({seed} \
         UNION SELECT i.inhrelid FROM pg_inherits i JOIN down d ON i.inhparent = d.relid \
         JOIN pg_class k ON k.oid = i.inhrelid WHERE {below})"
    )
}

/// The seed of [`descendants`] for tables named by schema and name, given as two text-array parameters
/// (`$s`, `$t`), of the kinds `kinds` of `c` allows.
pub(crate) fn named(s: usize, t: usize, kinds: &str) -> String {
    format!(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN unnest(${s}::text[], ${t}::text[]) AS w(s, t) ON n.nspname = w.s AND c.relname = w.t WHERE {kinds}"
    )
}

/// The tables `oids` (`$1`), their partitions at every level and their inheritance children, however
/// recent, by schema and name (`n`, `c`).
fn members() -> String {
    format!(
        "{} SELECT n.nspname::text, c.relname::text FROM down JOIN pg_class c ON c.oid = down.relid \
         JOIN pg_namespace n ON n.oid = c.relnamespace",
        descendants("SELECT r.oid FROM unnest($1::oid[]) AS r(oid)", "TRUE")
    )
}

/// The tables among `oids`, their partitions and inheritance children (current ones, however recent) not
/// at REPLICA IDENTITY FULL. (Plain tables too: a migration may set one back.)
pub async fn not_at_identity_full(client: &Client, oids: &[u32]) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            &format!(
                "{} WHERE c.relkind = 'r' AND c.relreplident <> 'f' ORDER BY 1, 2",
                members()
            ),
            &[&oids],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the mapped tables' replica identity: {}",
                error_text(&e)
            )
        })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The tables among `oids`, their partitions and inheritance children that are UNLOGGED (Postgres lets a
/// partition be, though not a published table): their changes are never written to the WAL, so never
/// reach the trail.
pub async fn unlogged_members(client: &Client, oids: &[u32]) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            &format!(
                "{} WHERE c.relkind = 'r' AND c.relpersistence = 'u' ORDER BY 1, 2",
                members()
            ),
            &[&oids],
        )
        .await
        .map_err(|e| anyhow!("reading the mapped tables' persistence: {}", error_text(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Inheritance children (not partitions, which a publication takes with their table) of the tables
/// `oids`, at every level, that publication `publication` does not publish (whatever way it names its
/// tables: listed, FOR ALL TABLES, a schema): their changes are not published until they are added.
/// Ordinary permanent tables only: a foreign or temporary child writes nothing to this server's WAL.
pub async fn unpublished_children(
    client: &Client,
    oids: &[u32],
    publication: &str,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            &format!(
                "{} WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND NOT c.relispartition \
                 AND NOT (c.oid = ANY($1::oid[])) AND NOT EXISTS (SELECT 1 FROM pg_publication_tables pt \
                 WHERE pt.pubname = $2 AND pt.schemaname = n.nspname AND pt.tablename = c.relname) ORDER BY 1, 2",
                members()
            ),
            &[&oids, &publication],
        )
        .await
        .map_err(|e| anyhow!("reading the mapped tables' inheritance children: {}", error_text(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Relations that inherit from more than one of the tables `oids` (directly or not): their changes cannot
/// be one mapped table's, and each table's redaction would hold for them.
pub async fn children_of_several(client: &Client, oids: &[u32]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "WITH RECURSIVE down(relid, root) AS ( \
               SELECT i.inhrelid, r.oid FROM unnest($1::oid[]) AS r(oid) JOIN pg_inherits i ON i.inhparent = r.oid \
               UNION SELECT i.inhrelid, d.root FROM pg_inherits i JOIN down d ON i.inhparent = d.relid) \
             SELECT n.nspname::text, c.relname::text FROM down JOIN pg_class c ON c.oid = down.relid \
             JOIN pg_namespace n ON n.oid = c.relnamespace GROUP BY 1, 2 HAVING count(DISTINCT root) > 1 ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(|e| anyhow!("reading the mapped tables' children: {}", error_text(&e)))?;
    Ok(rows
        .iter()
        .map(|r| crate::pg::qualified(&r.get::<_, String>(0), &r.get::<_, String>(1)))
        .collect())
}

/// The partitions (at every level) of the tables `oids`, and their inheritance children, each with the
/// table of `oids` it belongs to: the publication sends their changes under their own names.
pub async fn partitions_of(client: &Client, oids: &[u32]) -> Result<Vec<(u32, u32)>> {
    let rows = client
        .query(
            "WITH RECURSIVE down(relid, root) AS ( \
               SELECT i.inhrelid, r.oid FROM unnest($1::oid[]) AS r(oid) JOIN pg_inherits i ON i.inhparent = r.oid \
               UNION ALL SELECT i.inhrelid, d.root FROM pg_inherits i JOIN down d ON i.inhparent = d.relid) \
             SELECT relid::oid, root::oid FROM down",
            &[&oids],
        )
        .await
        .map_err(|e| anyhow!("reading the mapped tables' partitions: {}", error_text(&e)))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| anyhow!("reading the mapped tables' partitions: {}", error_text(&e)))
}

/// One link of a relation's chain up to the tables it is a partition (or an inheritance child) of: which
/// `pg_inherits` row it is (its `xmin`, the transaction that attached it: detaching deletes the row, so a
/// relation attached again has another) and what says that it held for every change still to be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLink {
    pub child: u32,
    pub parent: u32,
    pub xmin: u32,
    /// Attached by a transaction older than the slot's `catalog_xmin`: finished before any change the slot
    /// still holds, so every one of them was made under this link (a writer of the child would have held
    /// the attach back until its own commit).
    pub before_slot: bool,
    /// Attached in the (sub)transaction that created the child (`CREATE TABLE … PARTITION OF`, `INHERITS`):
    /// the child was never anything else's, for changes of transactions that began after that one. The
    /// creating transaction is read from the one catalog row no DDL rewrites: the dependency of the table's
    /// row type on the table (`pg_attribute` rows, for one, take the id of a later `GRANT` on a column).
    pub with_child: bool,
}

/// The links from relation `oid` up to the tables it is a partition or child of, nearest first, as the
/// catalog has them now; `slot` is the replication slot whose `catalog_xmin` dates them.
pub async fn member_links(client: &Client, oid: u32, slot: &str) -> Result<Vec<MemberLink>> {
    let what = |e: &tokio_postgres::Error| {
        anyhow!(
            "reading what relation {oid} is a partition or child of: {}",
            error_text(e)
        )
    };
    let rows = client
        .query(
            "WITH RECURSIVE up(child, parent, lx, depth) AS ( \
               SELECT inhrelid, inhparent, xmin, 1 FROM pg_inherits WHERE inhrelid = $1::oid \
               UNION ALL SELECT i.inhrelid, i.inhparent, i.xmin, up.depth + 1 FROM pg_inherits i \
               JOIN up ON i.inhrelid = up.parent WHERE up.depth < 64) \
             SELECT up.child::oid, up.parent::oid, up.lx::text::bigint, \
               COALESCE(age(up.lx) > (SELECT age(catalog_xmin) FROM pg_replication_slots WHERE slot_name = $2), false), \
               EXISTS (SELECT 1 FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_type'::regclass \
                 AND d.objid = c.reltype AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid \
                 AND d.deptype = 'i' WHERE c.oid = up.child AND d.xmin = up.lx) \
             FROM up ORDER BY depth",
            &[&oid, &slot],
        )
        .await
        .map_err(|e| what(&e))?;
    rows.iter()
        .map(|r| {
            Ok(MemberLink {
                child: r.try_get(0)?,
                parent: r.try_get(1)?,
                xmin: r.try_get::<_, i64>(2)? as u32,
                before_slot: r.try_get(3)?,
                with_child: r.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| what(&e))
}

/// Whether transaction `xid` (its low 32 bits, as pgoutput sends it) is still in progress for other
/// sessions: the walsender may send a transaction once its commit is in the WAL, a moment before the
/// committing backend makes it visible, and a catalog read in that moment sees the state before it.
pub async fn in_progress(client: &Client, xid: u32) -> Result<bool> {
    // Not "listed in the snapshot's in-progress xids": a transaction that has not finished yet and is the
    // newest one is at or past the snapshot's xmax, which that list never holds. Visible or not is the
    // question, asked of the full (epoch-qualified) id nearest the snapshot's xmax.
    let row = client
        .query_one(
            "SELECT NOT pg_visible_in_snapshot((CASE WHEN f - xm > 2147483648 THEN f - 4294967296 \
               WHEN xm - f > 2147483648 THEN f + 4294967296 ELSE f END)::text::xid8, s) \
             FROM (SELECT s, xm, xm - xm % 4294967296 + $1 AS f FROM \
               (SELECT s, pg_snapshot_xmax(s)::text::bigint AS xm FROM \
                 (SELECT pg_current_snapshot() AS s) a) b) c",
            &[&(xid as i64)],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading whether transaction {xid} is visible: {}",
                error_text(&e)
            )
        })?;
    row.try_get(0).map_err(|e| {
        anyhow!(
            "reading whether transaction {xid} is visible: {}",
            error_text(&e)
        )
    })
}

/// A transaction id given out now (to a transaction of this session that ends at once): a transaction
/// with a newer id made its first write after this call.
pub async fn fresh_xid(client: &Client) -> Result<u32> {
    let row = client
        .query_one(
            "SELECT (pg_current_xact_id()::text::bigint % 4294967296)",
            &[],
        )
        .await
        .map_err(|e| anyhow!("taking a transaction id: {}", error_text(&e)))?;
    let id: i64 = row
        .try_get(0)
        .map_err(|e| anyhow!("taking a transaction id: {}", error_text(&e)))?;
    Ok(id as u32)
}

/// Whether the server has publications of schemas (PostgreSQL 15 on): what a query of
/// `pg_publication_namespace` needs to know first.
async fn publication_schemas(client: &Client) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT to_regclass('pg_catalog.pg_publication_namespace') IS NOT NULL",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
}

/// The partitioned tables publication `publication` lists (by OID), or `None` when it publishes more than
/// a list of tables (`FOR ALL TABLES`, or a schema): a partition's change the publication sent was made
/// while the partition was under one of those (Postgres decides with the catalog of the change's time).
pub async fn published_partitioned(client: &Client, publication: &str) -> Result<Option<Vec<u32>>> {
    let what = |e: &tokio_postgres::Error| {
        anyhow!(
            "reading the partitioned tables publication {publication} lists: {}",
            error_text(e)
        )
    };
    let schemas = publication_schemas(client).await.map_err(|e| what(&e))?;
    let wide = if schemas {
        "p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_namespace s WHERE s.pnpubid = p.oid)"
    } else {
        "p.puballtables"
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT {wide}, ARRAY(SELECT r.prrelid FROM pg_publication_rel r JOIN pg_class c \
                 ON c.oid = r.prrelid WHERE r.prpubid = p.oid AND c.relkind = 'p') \
                 FROM pg_publication p WHERE p.pubname = $1"
            ),
            &[&publication],
        )
        .await
        .map_err(|e| what(&e))?;
    let Some(row) = row else { return Ok(None) };
    let wide: bool = row.try_get(0).map_err(|e| what(&e))?;
    let oids: Vec<u32> = row.try_get(1).map_err(|e| what(&e))?;
    Ok((!wide).then_some(oids))
}

/// The partitioned tables publication `publication` can publish a change through (its root): those it
/// lists, or every partitioned table of the database when it is `FOR ALL TABLES` or lists a schema.
pub async fn publishable_partitioned(client: &Client, publication: &str) -> Result<Vec<u32>> {
    match published_partitioned(client, publication).await? {
        Some(oids) => Ok(oids),
        None => {
            let rows = client
                .query("SELECT oid FROM pg_class WHERE relkind = 'p'", &[])
                .await
                .map_err(|e| anyhow!("reading the partitioned tables: {}", error_text(&e)))?;
            rows.iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow!("reading the partitioned tables: {}", error_text(&e)))
        }
    }
}

/// What an edit of publication `publication` leaves behind, even one set back at once: the row versions
/// (`xmin`) of its own entry (options: publish, publish_via_partition_root), of each table entry (row
/// filter, column list) and each schema entry (`TABLES IN SCHEMA`, PostgreSQL 15 on). An entry removed
/// and added again comes back with a new version. Adding a table (an inheritance child) changes none of
/// the entries already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationStamp {
    own: i64,
    entries: std::collections::BTreeMap<(char, u32), i64>,
    /// The publication's OID: another one is the publication dropped and created again under its name.
    /// Absent from stamps written before it was kept.
    oid: Option<u32>,
}

impl PublicationStamp {
    /// As kept in the source's reports: `own;kind:id:xmin,…;oid`.
    pub fn to_text(&self) -> String {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|((k, id), x)| format!("{k}:{id}:{x}"))
            .collect();
        let oid = self.oid.map(|o| format!(";{o}")).unwrap_or_default();
        format!("{};{}{oid}", self.own, entries.join(","))
    }

    /// Read back from a report; `None` for anything else (a report of another version, or altered):
    /// nothing is compared then.
    pub fn parse(text: &str) -> Option<PublicationStamp> {
        let (own, rest) = text.split_once(';')?;
        let (rest, oid) = match rest.split_once(';') {
            Some((rest, oid)) => (rest, Some(oid.parse().ok()?)),
            None => (rest, None),
        };
        let mut entries = std::collections::BTreeMap::new();
        for e in rest.split(',').filter(|e| !e.is_empty()) {
            let mut parts = e.splitn(3, ':');
            let k = parts.next()?.chars().next()?;
            let id = parts.next()?.parse().ok()?;
            let x = parts.next()?.parse().ok()?;
            entries.insert((k, id), x);
        }
        Some(PublicationStamp {
            own: own.parse().ok()?,
            entries,
            oid,
        })
    }

    /// Whether `now` is another publication than `self` under the same name: dropped and created again.
    pub fn recreated(&self, now: &PublicationStamp) -> bool {
        matches!((self.oid, now.oid), (Some(a), Some(b)) if a != b)
    }

    /// The tables whose entries `self` holds and `now` does not: removed from the publication, or dropped.
    pub fn tables_gone(&self, now: &PublicationStamp) -> Vec<u32> {
        self.entries
            .keys()
            .filter(|k| k.0 == 't' && !now.entries.contains_key(k))
            .map(|k| k.1)
            .collect()
    }

    /// Whether the publication was edited between `self` and `now`: its own entry, or an entry both
    /// hold, made anew; a schema's entry added or removed (waltrail never does either); a table's entry
    /// removed while the table `exists` (a table dropped takes its entry with it; one added is an
    /// inheritance child waltrail added, or a table put back, which capture says on its own). A schema
    /// entry swapped for a table's entry shows (QA37 H1).
    pub fn edited_since(&self, now: &PublicationStamp, exists: &dyn Fn(u32) -> bool) -> bool {
        self.own != now.own
            || self.entries.iter().any(|(k, x)| match now.entries.get(k) {
                Some(y) => y != x,
                None => k.0 == 's' || exists(k.1),
            })
            || now
                .entries
                .keys()
                .any(|k| k.0 == 's' && !self.entries.contains_key(k))
    }
}

pub async fn publication_stamp(
    client: &Client,
    publication: &str,
) -> Result<Option<PublicationStamp>> {
    let what = |e: &tokio_postgres::Error| {
        anyhow!(
            "reading publication {publication}'s row versions: {}",
            error_text(e)
        )
    };
    let schemas = if publication_schemas(client).await.map_err(|e| what(&e))? {
        "UNION ALL SELECT 's', n.pnnspid, n.xmin::text::bigint FROM pg_publication_namespace n \
         WHERE n.pnpubid = p.oid"
    } else {
        ""
    };
    let rows = client
        .query(
            &format!(
                "SELECT p.xmin::text::bigint, e.kind, e.id, e.x, p.oid FROM pg_publication p \
                 LEFT JOIN LATERAL (SELECT 't'::text AS kind, r.prrelid AS id, r.xmin::text::bigint AS x \
                 FROM pg_publication_rel r WHERE r.prpubid = p.oid {schemas}) e ON true \
                 WHERE p.pubname = $1"
            ),
            &[&publication],
        )
        .await
        .map_err(|e| what(&e))?;
    let mut stamp: Option<PublicationStamp> = None;
    for r in rows {
        let own: i64 = r.try_get(0).map_err(|e| what(&e))?;
        let oid: u32 = r.try_get(4).map_err(|e| what(&e))?;
        let s = stamp.get_or_insert_with(|| PublicationStamp {
            own,
            entries: Default::default(),
            oid: Some(oid),
        });
        if let (Some(kind), Some(id), Some(x)) = (
            r.try_get::<_, Option<String>>(1).map_err(|e| what(&e))?,
            r.try_get::<_, Option<u32>>(2).map_err(|e| what(&e))?,
            r.try_get::<_, Option<i64>>(3).map_err(|e| what(&e))?,
        ) {
            s.entries
                .insert((kind.chars().next().unwrap_or('t'), id), x);
        }
    }
    Ok(stamp)
}

/// Which of `oids` are relations that exist now.
pub async fn existing(client: &Client, oids: &[u32]) -> Result<std::collections::HashSet<u32>> {
    // Asked at each look, almost always of nothing.
    if oids.is_empty() {
        return Ok(Default::default());
    }
    let rows = client
        .query(
            "SELECT c.oid FROM pg_class c WHERE c.oid = ANY($1::oid[])",
            &[&oids],
        )
        .await
        .map_err(|e| anyhow!("reading which relations exist: {}", error_text(&e)))?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("reading which relations exist: {}", error_text(&e)))
}

/// Which of `oids` are partitioned tables now, and whether any of them is gone.
pub async fn partitioned_among(client: &Client, oids: &[u32]) -> Result<(Vec<u32>, bool)> {
    let what = |e: &tokio_postgres::Error| {
        anyhow!("reading which tables are partitioned: {}", error_text(e))
    };
    let rows = client
        .query(
            "SELECT o, c.relkind = 'p' FROM unnest($1::oid[]) AS o LEFT JOIN pg_class c ON c.oid = o",
            &[&oids],
        )
        .await
        .map_err(|e| what(&e))?;
    let mut partitioned = Vec::new();
    let mut gone = false;
    for r in rows {
        let oid: u32 = r.try_get(0).map_err(|e| what(&e))?;
        match r.try_get::<_, Option<bool>>(1).map_err(|e| what(&e))? {
            Some(true) => partitioned.push(oid),
            Some(false) => {}
            None => gone = true,
        }
    }
    Ok((partitioned, gone))
}

/// Whether publication `publication` publishes relation `oid` as itself now (listed in it, or in a
/// schema it lists, or it is `FOR ALL TABLES`), rather than through a table it is a partition of.
pub async fn published_as_itself(client: &Client, publication: &str, oid: u32) -> Result<bool> {
    let what = |e: &tokio_postgres::Error| {
        anyhow!(
            "reading whether publication {publication} lists relation {oid}: {}",
            error_text(e)
        )
    };
    let schemas = publication_schemas(client).await.map_err(|e| what(&e))?;
    let by_schema = if schemas {
        "OR EXISTS (SELECT 1 FROM pg_publication_namespace s JOIN pg_class c ON c.relnamespace = s.pnnspid \
         WHERE s.pnpubid = p.oid AND c.oid = $2::oid)"
    } else {
        ""
    };
    client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = $1 AND (p.puballtables \
                 OR EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = $2::oid) \
                 {by_schema}))"
            ),
            &[&publication, &oid],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| what(&e))
}

/// Every membership link (child, parent, `pg_inherits.xmin`) below the tables `oids`, at every level, each
/// with whether no transaction has touched its row since it was made (`xmax` is 0): a detach that has
/// written its commit but is not yet visible to this read has marked the row already, so an untouched row
/// read after a WAL position held at that position; and whether it is pending detach (`DETACH PARTITION
/// … CONCURRENTLY` between its two steps, or cancelled between them: Postgres 14+, read through
/// `to_jsonb` so that older servers answer no).
pub async fn links_below(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<((u32, u32, u32), bool, bool)>> {
    let what = |e: &tokio_postgres::Error| {
        anyhow!(
            "reading the mapped tables' partitions and children: {}",
            error_text(e)
        )
    };
    let rows = client
        .query(
            "WITH RECURSIVE down(child, parent, lx, lmax, pending, depth) AS ( \
               SELECT i.inhrelid, i.inhparent, i.xmin, i.xmax, \
                 coalesce((to_jsonb(i) ->> 'inhdetachpending')::boolean, false), 1 \
               FROM unnest($1::oid[]) AS r(oid) JOIN pg_inherits i ON i.inhparent = r.oid \
               UNION ALL SELECT i.inhrelid, i.inhparent, i.xmin, i.xmax, \
                 coalesce((to_jsonb(i) ->> 'inhdetachpending')::boolean, false), d.depth + 1 \
               FROM pg_inherits i JOIN down d ON i.inhparent = d.child WHERE d.depth < 64) \
             SELECT child::oid, parent::oid, lx::text::bigint, lmax::text = '0', pending FROM down",
            &[&oids],
        )
        .await
        .map_err(|e| what(&e))?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get(0)?, r.try_get(1)?, r.try_get::<_, i64>(2)? as u32),
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| what(&e))
}

/// The tables a relation is a partition (or an inheritance child) of, nearest first (none for a table that
/// is neither).
pub async fn ancestors(client: &Client, oid: u32) -> Result<Vec<u32>> {
    let rows = client
        .query(
            "WITH RECURSIVE up(relid, depth) AS ( \
               SELECT inhparent, 1 FROM pg_inherits WHERE inhrelid = $1::oid \
               UNION ALL SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.relid \
               WHERE up.depth < 64) \
             SELECT relid::oid FROM up ORDER BY depth",
            &[&oid],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the partition ancestors of relation {oid}: {}",
                error_text(&e)
            )
        })?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| {
            anyhow!(
                "reading the partition ancestors of {oid}: {}",
                error_text(&e)
            )
        })
}

/// The schema and name a relation has now, by its OID (`None` when it is gone): a table renamed keeps its
/// OID, and its place in the publication.
pub async fn relation_name(client: &Client, oid: u32) -> Result<Option<(String, String)>> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid",
            &[&oid],
        )
        .await
        .map_err(|e| anyhow!("reading the name of relation {oid}: {}", error_text(&e)))?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .transpose()
        .map_err(|e: tokio_postgres::Error| {
            anyhow!("reading the name of relation {oid}: {}", error_text(&e))
        })
}

/// The database and role settings (`ALTER DATABASE/ROLE … SET`) and server settings whose value is
/// `secret`: every role can read those (`SHOW`, `pg_db_role_setting`, `pg_settings`), so a secret kept
/// there seals for anyone (QA34 H1). Compared here, not in SQL: the secret never goes into a query.
pub async fn settings_holding(client: &Client, secret: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT split_part(s, '=', 1), substr(s, strpos(s, '=') + 1) \
             FROM pg_db_role_setting, unnest(setconfig) AS s \
             UNION ALL SELECT name, setting FROM pg_settings WHERE setting IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| anyhow!("reading the database and role settings: {}", error_text(&e)))?;
    let mut out = Vec::new();
    for r in rows {
        let (name, value): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        if value == secret && !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Where the WAL is written now: read after a catalog read, every change at or past it was committed after
/// that read.
pub async fn wal_insert_lsn(client: &Client) -> Result<u64> {
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(|e| anyhow!("reading the WAL insert position: {}", error_text(&e)))?;
    let text: String = row
        .try_get(0)
        .map_err(|e| anyhow!("reading the WAL insert position: {}", error_text(&e)))?;
    text.parse::<crate::capture::Lsn>()
        .map(|l| l.0)
        .map_err(|e| anyhow!("reading the WAL insert position {text:?}: {e}"))
}

/// Whether relation `oid` is a partition (its columns are its table's, always); not an inheritance child,
/// which may keep columns of its own, a copy of one its parent dropped among them.
pub async fn is_partition(client: &Client, oid: u32) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT relispartition FROM pg_class WHERE oid = $1::oid",
            &[&oid],
        )
        .await
        .map_err(|e| anyhow!("reading relation {oid}: {}", error_text(&e)))?;
    Ok(row.is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false)))
}

/// Why a generated column cannot be configured, and the fix.
pub const GENERATED: &str = "a column named in its [[tables]] entry is a generated column, which Postgres does not \
     send in logical replication (every change would lack it); take it out of the entry (its value is absent \
     from diffs too)";

pub async fn table_info(client: &Client, schema: &str, table: &str) -> Result<TableInfo> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, pg_has_role(c.relowner, 'USAGE') AS owned, c.relkind = 'p' \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &table],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the catalog for {schema}.{table}: {}",
                error_text(&e)
            )
        })?;
    let Some(row) = row else {
        return Ok(TableInfo {
            schema: schema.into(),
            table: table.into(),
            exists: false,
            oid: 0,
            replica_identity: 'd',
            primary_key: vec![],
            columns: vec![],
            attnums: vec![],
            dropped_attnums: vec![],
            generated: vec![],
            partitioned: false,
            column_types: vec![],
            not_null: vec![],
            owned_by_us: false,
            partitions_not_full: vec![],
        });
    };
    let oid: u32 = row.get(0);
    let ident: String = row.get(1);
    let owned: bool = row.get(2);
    let partitioned: bool = row.get(3);
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the primary key of {schema}.{table}: {}",
                error_text(&e)
            )
        })?;
    let cols = client
        .query(
            "SELECT a.attname::text, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, \
             t.typcategory::text, a.attgenerated <> '', a.attnum, a.attnotnull \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the columns of {schema}.{table}: {}",
                error_text(&e)
            )
        })?;
    let dropped = client
        .query(
            "SELECT attnum FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the dropped columns of {schema}.{table}: {}",
                error_text(&e)
            )
        })?;
    let partitions = client
        .query(
            &format!(
                "{} WHERE c.oid <> ($1::oid[])[1] AND c.relkind = 'r' AND c.relreplident <> 'f' ORDER BY 1, 2",
                members()
            ),
            &[&vec![oid]],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the partitions of {schema}.{table}: {}",
                error_text(&e)
            )
        })?;
    Ok(TableInfo {
        partitions_not_full: partitions.iter().map(|r| (r.get(0), r.get(1))).collect(),
        schema: schema.into(),
        table: table.into(),
        exists: true,
        oid,
        replica_identity: ident.chars().next().unwrap_or('d'),
        primary_key: pk.iter().map(|r| r.get(0)).collect(),
        columns: cols.iter().map(|r| r.get(0)).collect(),
        attnums: cols.iter().map(|r| r.get(4)).collect(),
        dropped_attnums: dropped.iter().map(|r| r.get(0)).collect(),
        generated: cols
            .iter()
            .filter(|r| r.get::<_, bool>(3))
            .map(|r| r.get(0))
            .collect(),
        column_types: cols
            .iter()
            .map(|r| {
                let category: String = r.get(2);
                (r.get(1), category.chars().next().unwrap_or('X'))
            })
            .collect(),
        not_null: cols
            .iter()
            .filter(|r| r.get::<_, bool>(5))
            .map(|r| r.get(0))
            .collect(),
        owned_by_us: owned,
        partitioned,
    })
}

/// One column of a relation as `pg_attribute` has it now, dropped ones included (their numbers stay taken).
#[derive(Debug, Clone, PartialEq)]
pub struct NumberedColumn {
    pub attnum: i16,
    pub name: String,
    pub dropped: bool,
    /// Never sent in logical replication.
    pub generated: bool,
    /// `atttypid` (0 for a dropped column): what a Relation message names for the column.
    pub type_oid: u32,
}

/// Every column of relation `oid` by number, dropped ones included.
pub async fn numbered_columns(client: &Client, oid: u32) -> Result<Vec<NumberedColumn>> {
    let rows = client
        .query(
            "SELECT attnum, attname::text, attisdropped, attgenerated <> '', atttypid FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| anyhow!("reading the columns of relation {oid}: {}", error_text(&e)))?;
    rows.iter()
        .map(|r| {
            Ok(NumberedColumn {
                attnum: r.try_get(0)?,
                name: r.try_get(1)?,
                dropped: r.try_get(2)?,
                generated: r.try_get(3)?,
                type_oid: r.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| anyhow!("reading the columns of relation {oid}: {}", error_text(&e)))
}

/// Read what the catalog says of each configured table, in config order.
pub async fn tables(client: &Client, names: &[(String, String)]) -> Result<Vec<TableInfo>> {
    let mut out = Vec::with_capacity(names.len());
    for (schema, table) in names {
        out.push(table_info(client, schema, table).await?);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: String,
    pub database: String,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` (WAL it needs is about to go) or `lost` (it went: the slot is
    /// invalidated, the changes since `confirmed_flush` are gone).
    pub wal_status: Option<String>,
}

pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(
            "SELECT coalesce(plugin, '')::text, coalesce(database, '')::text, active_pid, confirmed_flush_lsn::text, \
             wal_status::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| anyhow!("reading replication slot {slot}: {}", error_text(&e)))?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
        wal_status: r.get(4),
    }))
}

/// What holds the slot's WAL, read while streaming: the slot's state, and whether a long transaction on the
/// source (not waltrail) is what keeps its restart position back.
#[derive(Debug, Clone, Default)]
pub struct SlotHealth {
    pub wal_status: Option<String>,
    /// Bytes of WAL that may still be written before the slot is invalidated (`max_slot_wal_keep_size`).
    pub safe_wal_size: Option<i64>,
    /// WAL kept for the slot: from its restart position (held back by the oldest transaction still open
    /// when the slot's decoding passed it) to the current position.
    pub retained_bytes: Option<i64>,
    /// WAL written since what waltrail confirmed: what waltrail itself has not yet stored.
    pub unconfirmed_bytes: Option<i64>,
    /// Age of the oldest transaction open on the source database, in seconds.
    pub oldest_xact_age_s: Option<f64>,
}

pub async fn slot_health(client: &Client, slot: &str) -> Result<SlotHealth> {
    let row = client
        .query_opt(
            "SELECT wal_status::text, safe_wal_size, \
                    (pg_current_wal_lsn() - restart_lsn)::bigint, \
                    (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, \
                    (SELECT extract(epoch FROM max(now() - xact_start))::float8 FROM pg_stat_activity \
                      WHERE datname = current_database() AND xact_start IS NOT NULL \
                        AND backend_type = 'client backend' AND pid <> pg_backend_pid()) \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| anyhow!("reading replication slot {slot}: {}", error_text(&e)))?;
    Ok(row
        .map(|r| SlotHealth {
            wal_status: r.get(0),
            safe_wal_size: r.get(1),
            retained_bytes: r.get(2),
            unconfirmed_bytes: r.get(3),
            oldest_xact_age_s: r.get(4),
        })
        .unwrap_or_default())
}

/// The current OID of each table (by schema and name), `None` where there is none; and whether the
/// publication holds it.
pub async fn published_oids(
    client: &Client,
    publication: &str,
    names: &[(String, String)],
) -> Result<Vec<(Option<u32>, bool)>> {
    let mut out = Vec::with_capacity(names.len());
    for (schema, table) in names {
        let row = client
            .query_opt(
                // A partitioned table listed in a publication that publishes partitions under their own
                // names is in it, though `pg_publication_tables` shows its partitions instead.
                "SELECT c.oid, EXISTS (SELECT 1 FROM pg_publication_tables p \
                   WHERE p.pubname = $3 AND p.schemaname = n.nspname AND p.tablename = c.relname) \
                   OR EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid \
                   WHERE p.pubname = $3 AND r.prrelid = c.oid) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[schema, table, &publication],
            )
            .await
            .map_err(|e| {
                anyhow!(
                    "reading the catalog for {schema}.{table}: {}",
                    error_text(&e)
                )
            })?;
        out.push(match row {
            Some(r) => (Some(r.get(0)), r.get(1)),
            None => (None, false),
        });
    }
    Ok(out)
}

/// One row of `pg_type`: enough to tell how values of a type not built in are rendered.
#[derive(Debug, Clone)]
pub struct TypeRow {
    pub oid: u32,
    /// 'b' base, 'c' composite, 'd' domain, 'e' enum, 'p' pseudo, 'r' range, 'm' multirange.
    pub typtype: u8,
    /// 'A' array, 'B' boolean, 'N' numeric, 'S' string, 'U' user-defined, ...
    pub typcategory: u8,
    /// Element type of an array, else 0.
    pub typelem: u32,
    /// Base type of a domain, else 0.
    pub typbasetype: u32,
    /// Element delimiter of an array's text form.
    pub typdelim: u8,
}

/// Look up types not built in (enums, domains, arrays of them), with the types they point to.
pub async fn fetch_types(client: &Client, oids: &[u32]) -> Result<Vec<TypeRow>> {
    let mut want: Vec<u32> = oids.to_vec();
    let mut seen: HashMap<u32, TypeRow> = HashMap::new();
    for _ in 0..8 {
        want.retain(|o| !seen.contains_key(o));
        if want.is_empty() {
            break;
        }
        let rows = client
            .query(
                "SELECT oid, typtype::text, typcategory::text, typelem, typbasetype, typdelim::text \
                 FROM pg_type WHERE oid = ANY($1)",
                &[&want],
            )
            .await
            .map_err(|e| anyhow!("reading pg_type: {}", error_text(&e)))?;
        let mut next = Vec::new();
        for r in rows {
            let byte = |i: usize| r.get::<_, String>(i).bytes().next().unwrap_or(b'?');
            let row = TypeRow {
                oid: r.get(0),
                typtype: byte(1),
                typcategory: byte(2),
                typelem: r.get(3),
                typbasetype: r.get(4),
                typdelim: byte(5),
            };
            for o in [row.typelem, row.typbasetype] {
                if o != 0 {
                    next.push(o);
                }
            }
            seen.insert(row.oid, row);
        }
        want = next;
    }
    Ok(seen.into_values().collect())
}

/// Every row of a platform table, with the named columns as Postgres's text output (`None` for NULL).
/// The simple-query protocol returns each value through its type's output function, the same text pgoutput
/// sends, so loaded and streamed rows compare equal (a `::text` cast would not: inet gains a mask).
pub async fn snapshot(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[&str],
) -> Result<Vec<Vec<Option<String>>>> {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        qualified(schema, table)
    );
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(|e| anyhow!("reading {schema}.{table}: {}", error_text(&e)))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..columns.len())
                    .map(|i| r.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::PublicationStamp;

    /// What the reports keep reads back the same, anything else reads as nothing; an entry made anew is
    /// an edit, one added or removed is not.
    #[test]
    fn a_publication_stamp_round_trips_and_tells_edits() {
        let was = PublicationStamp::parse("100;t:16384:200,s:2200:300").unwrap();
        assert_eq!(PublicationStamp::parse(&was.to_text()), Some(was.clone()));
        for bad in ["", "x;", "1;t:1", "1;t:a:2", "1;t:1:2:3x"] {
            assert_eq!(PublicationStamp::parse(bad), None, "{bad}");
        }
        let now = |t: &str| PublicationStamp::parse(t).unwrap();
        let dropped = |_: u32| false;
        let there = |_: u32| true;
        assert!(!was.edited_since(&now("100;t:16384:200,s:2200:300,t:16400:900"), &dropped));
        assert!(!was.edited_since(&now("100;s:2200:300"), &dropped));
        assert!(was.edited_since(&now("100;s:2200:300"), &there));
        assert!(was.edited_since(&now("101;t:16384:200,s:2200:300"), &dropped));
        assert!(was.edited_since(&now("100;t:16384:200,s:2200:301"), &dropped));
        assert!(was.edited_since(&now("100;t:16384:200"), &dropped));
        assert!(was.edited_since(&now("100;t:16384:200,s:2200:300,s:99:1"), &dropped));
        assert_eq!(was.tables_gone(&now("100;s:2200:300")), [16384]);
        // The publication's own OID, kept since QA37 M4: another one is the publication created again.
        let kept = now("100;t:16384:200;16500");
        assert_eq!(PublicationStamp::parse(&kept.to_text()), Some(kept.clone()));
        assert!(kept.recreated(&now("100;t:16384:200;16501")));
        assert!(!kept.recreated(&now("100;t:16384:200;16500")));
        // A stamp from before the OID was kept cannot tell.
        assert!(!was.recreated(&kept) && !kept.recreated(&was));
        for bad in ["1;t:1:2;", "1;t:1:2;x", "1;;1;2"] {
            assert_eq!(PublicationStamp::parse(bad), None, "{bad}");
        }
    }
}

//! The tables the trail holds changes of, against the tables the config maps now: one no longer mapped
//! is said in the trail once ("no longer mapped"), one mapped again after that is said too ("mapped
//! again"), and the relations of those not mapped are what capture must tell apart from its own.

use std::collections::{BTreeMap, HashSet};

use super::read;
use super::retry::Failure;
use super::{MAPPED_AGAIN, UNMAPPED};
use crate::capture::{catalog, provision};
use crate::config::Config;

/// A table no longer mapped that is still there to change: its name, its last change stored as (position,
/// commit time), the occurrence of this record.
pub(super) type Unmapped = (String, Option<(u64, i64)>, u64);

pub(super) struct Compared {
    pub unmapped_gaps: Vec<Unmapped>,
    /// Tables mapped again: (the position of their "no longer mapped" record, the occurrence).
    pub remapped: BTreeMap<String, (u64, u64)>,
    pub not_mapped: HashSet<String>,
    pub not_mapped_oids: HashSet<u32>,
    pub not_mapped_shapes: read::UnmappedShapes,
}

pub(super) async fn compare(
    cfg: &Config,
    ch: &clickhouse::Client,
    source_id: &str,
    sql: &tokio_postgres::Client,
    members_vouched: bool,
) -> Result<Compared, Failure> {
    // Tables the trail holds changes of, against the config: one no longer configured is said in the
    // trail once ("no longer mapped"), and one configured again after that is said too ("mapped
    // again"), whether or not waltrail keeps the publication: the operator's own config history.
    let configured: std::collections::HashSet<String> = cfg
        .tables
        .iter()
        .map(|t| {
            let (s, n) = crate::config::split_table(&t.table);
            format!("{s}.{n}")
        })
        .collect();
    let mut unmapped = Vec::new();
    let mut remapped = std::collections::BTreeMap::new();
    let mut records = crate::store::query::last_table_gaps(ch, source_id, [UNMAPPED, MAPPED_AGAIN])
        .await
        .map_err(Failure::Retry)?;
    // Tables the trail holds changes of that are not mapped now: their changes still in the slot are
    // what their "no longer mapped" record says is not in the trail, not relations to place.
    let mut not_mapped = std::collections::HashSet::new();
    let in_trail = crate::store::query::tables_in_trail(ch, source_id)
        .await
        .map_err(Failure::Retry)?;
    // And the tables the last start mapped (the publication waltrail keeps still holds them until this
    // start sets it): one with no item yet was mapped too, and its changes waiting in the slot are lost
    // the same way. (A publication kept by hand may hold any table: not a sign of it.)
    let platform_names: std::collections::HashSet<String> = cfg
        .context_tables()
        .into_iter()
        .map(|t| {
            let (s, n) = crate::config::split_table(t);
            format!("{s}.{n}")
        })
        .collect();
    let mut previously_mapped: Vec<String> = Vec::new();
    if cfg.postgres.manage_publication && members_vouched {
        for (s, t, _, under_member) in
            provision::publication_members(sql, &cfg.postgres.publication)
                .await
                .map_err(Failure::Retry)?
        {
            let name = format!("{s}.{t}");
            if !under_member && !configured.contains(&name) && !platform_names.contains(&name) {
                previously_mapped.push(name);
            }
        }
    }
    let trail_names: std::collections::HashSet<String> =
        in_trail.iter().map(|(t, _, _)| t.clone()).collect();
    let candidates = in_trail
        .into_iter()
        .map(|(t, l, w)| (t, Some((l, w))))
        .chain(
            previously_mapped
                .into_iter()
                .filter(|t| !trail_names.contains(t))
                .map(|t| (t, None)),
        );
    for (t, last) in candidates {
        let (records, at, summary) = records.remove(&t).unwrap_or_default();
        let last_lsn = last.map_or(0, |(l, _)| l);
        // Said unmapped since its last change captured, and not mapped again since.
        let unmapped_at =
            (records > 0 && at > last_lsn && summary.contains(UNMAPPED)).then_some(at);
        if !configured.contains(&t) {
            not_mapped.insert(t.clone());
        }
        match (configured.contains(&t), unmapped_at) {
            (false, None) => unmapped.push((t, last, records + 1)),
            (true, Some(at)) => {
                remapped.insert(t, (at, records + 1));
            }
            _ => {}
        }
    }
    // Every table not mapped now as the catalog has it (one read for all the uses below).
    let not_mapped_names: Vec<(String, String)> = not_mapped
        .iter()
        .map(|t| {
            let (s, n) = crate::config::split_table(t);
            (s.to_owned(), n.to_owned())
        })
        .collect();
    let not_mapped_infos = catalog::tables(sql, &not_mapped_names)
        .await
        .map_err(Failure::Fatal)?;
    // Only tables that are there to change: under its old name a renamed table (mapped under its new
    // one) or a dropped one has no changes to miss. (Every unmapped table is one of those not mapped.)
    let present: std::collections::HashSet<String> = not_mapped_infos
        .iter()
        .filter(|i| i.exists)
        .map(|i| format!("{}.{}", i.schema, i.table))
        .collect();
    let unmapped_gaps: Vec<_> = unmapped
        .into_iter()
        .filter(|(t, _, _)| present.contains(t))
        .collect();
    // Their relations by OID: a partition or child of one arrives under its own name.
    let not_mapped_oids: std::collections::HashSet<u32> = not_mapped_infos
        .iter()
        .filter(|i| i.exists)
        .map(|i| i.oid)
        .collect();
    // What a relation no mapped table explains could also have been theirs: their column names, and
    // whether one is gone (dropped, its columns unknown).
    let not_mapped_shapes = read::UnmappedShapes {
        columns: not_mapped_infos
            .iter()
            .filter(|i| i.exists)
            .map(|i| {
                let mut c: Vec<String> = i
                    .columns
                    .iter()
                    .filter(|c| !i.generated.contains(c))
                    .cloned()
                    .collect();
                c.sort_unstable();
                c
            })
            .collect(),
        some_gone: not_mapped_infos.iter().any(|i| !i.exists),
    };
    Ok(Compared {
        unmapped_gaps,
        remapped,
        not_mapped,
        not_mapped_oids,
        not_mapped_shapes,
    })
}

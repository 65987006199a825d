//! What a replay keeps. After a restart Postgres streams again every transaction it was not told is
//! stored, and some of them (whole, or the first part of a large one) are in ClickHouse already. Those
//! items stand as stored: written again they could differ from the stored copy (a context row the restart
//! could not wind back, another configuration), and two versions of one item would let a read show either
//! actor, and break the chain where merges keep the first copy.

use std::collections::{BTreeSet, HashMap, HashSet};
use uuid::Uuid;

use crate::capture::Lsn;
use crate::store::row::ItemRow;

/// Stored items per page at most: a page is held in memory until the replay reaches its items.
const PAGE_ITEMS: u64 = 5000;
/// And about this many bytes at most (items with large values make shorter pages).
const PAGE_BYTES: u64 = 16 << 20;

/// The stored items between where streaming resumed and the last commit stored, read a page at a time in
/// stream order as the replay comes to them.
pub struct StoredWindow {
    ch: clickhouse::Client,
    source_id: String,
    /// The last commit position stored: past it, nothing is stored and nothing is looked up.
    through: u64,
    /// The page held: the items at and after `from` in stream order, up to `until` (excluded; `None`:
    /// every stored item from `from` on).
    from: (u64, u32),
    until: Option<(u64, u32)>,
    rows: HashMap<Uuid, ItemRow>,
    /// The page's items by position (and id: rows written into the store by hand may share one): a
    /// commit's items without a scan of the page.
    positions: BTreeSet<(u64, u32, Uuid)>,
    loaded: bool,
    /// Items found stored and kept; of them, those the replay would have written otherwise (context rows
    /// changed since their commit, or another configuration), and those that do not follow their chain.
    pub kept: u64,
    pub differing: u64,
    pub unfit: u64,
    /// Items whose stored copy is another change (see [`StoredWindow::diverged`]).
    pub diverged: u64,
    /// The commit position of the last transaction found to replay differently (said once each).
    diverged_at: Option<u64>,
    /// Where a replay that went differently is recorded for the next start (and every report meanwhile).
    pending: Option<crate::pipeline::store::PendingGaps>,
    /// Stored items of the transaction being replayed that the replay came to (their page may be gone).
    met: Vec<Uuid>,
    /// The furthest position of a stored item the replay came to (held items may come after their place).
    met_last: Option<(u64, u32)>,
}

impl StoredWindow {
    /// `last_stored`: the source's last stored commit position; no window when it is before `start`.
    pub fn new(
        ch: clickhouse::Client,
        source_id: String,
        start: Lsn,
        last_stored: Option<u64>,
    ) -> Option<StoredWindow> {
        let through = last_stored.filter(|l| *l >= start.0)?;
        Some(StoredWindow {
            ch,
            source_id,
            through,
            from: (start.0, 0),
            until: None,
            rows: HashMap::new(),
            positions: BTreeSet::new(),
            loaded: false,
            kept: 0,
            differing: 0,
            unfit: 0,
            diverged: 0,
            diverged_at: None,
            pending: None,
            met: Vec::new(),
            met_last: None,
        })
    }

    pub fn with_pending_gaps(mut self, pending: crate::pipeline::store::PendingGaps) -> Self {
        self.pending = Some(pending);
        self
    }

    /// Whether a stored copy is the same change as the replay's item: the same table, resource and action.
    /// Its attribution may differ (context rows changed since), and so may what configuration alone
    /// decides (the resource type: a replay after a config change is no divergence). The resource id
    /// follows the configured id column too: a replay right after that setting changed is recorded as
    /// one (a false alarm, never a silent substitution).
    pub fn same_change(stored: &ItemRow, replayed: &ItemRow) -> bool {
        stored.table_name == replayed.table_name
            && stored.resource_id == replayed.resource_id
            && stored.action == replayed.action
    }

    /// At the commit of a transaction the window covers: its stored items that the replay did not come to
    /// (it had fewer, QA46 H1: a config change, or Postgres decoding a streamed transaction otherwise),
    /// each given to `each` in stream order. They are in the store and in the chain: the chain must run
    /// through them before anything after the transaction links on, and that the replay went otherwise is
    /// recorded (see [`StoredWindow::diverged`]). A transaction whose stored items go on past the page
    /// held is read on a page at a time (QA47 M2: those past it were left unjudged, and the chain forked
    /// at the first of them).
    pub async fn unmet(
        &mut self,
        commit_lsn: u64,
        mut each: impl FnMut(ItemRow),
    ) -> anyhow::Result<()> {
        let met: HashSet<Uuid> = std::mem::take(&mut self.met).into_iter().collect();
        self.met_last = None;
        if !self.covers(commit_lsn) || !self.loaded {
            return Ok(());
        }
        let mut first: Option<ItemRow> = None;
        let mut n = 0;
        loop {
            let at: Vec<(u64, u32, Uuid)> = self
                .positions
                .range((commit_lsn, 0, Uuid::nil())..=(commit_lsn, u32::MAX, Uuid::max()))
                .filter(|p| !met.contains(&p.2))
                .copied()
                .collect();
            // In stream order: the position set is sorted.
            for p in at {
                self.positions.remove(&p);
                if let Some(r) = self.rows.remove(&p.2) {
                    if first.is_none() {
                        first = Some(r.clone());
                    }
                    n += 1;
                    each(r);
                }
            }
            match self.until {
                Some(u) if u.0 == commit_lsn => self.hold(u).await?,
                _ => break,
            }
        }
        self.kept += n as u64;
        if let Some(first) = first {
            self.fewer(commit_lsn, &first, n);
        }
        Ok(())
    }

    /// The replay of a transaction ended before items stored of it: recorded like a divergence.
    fn fewer(&mut self, commit_lsn: u64, first: &ItemRow, n: usize) {
        let cause = format!(
            "the transaction committed at {} was decoded with fewer items after a restart than before it: \
             {n} item(s) stored before the restart, from its item {} ({}) on, had no counterpart in the \
             replay (Postgres sent a rolled-back savepoint of a streamed transaction the first time and not \
             the second, or the configuration changed in between)",
            Lsn(commit_lsn),
            first.seq,
            change(first)
        );
        let effect = "the items stored before the restart were kept as stored, and the chain runs through them";
        self.record(commit_lsn, n, &first.table_name, cause, effect);
    }

    /// The stored item with a replayed item's id is another change: Postgres did not decode the transaction
    /// as it did before the restart (a streamed transaction whose rolled-back savepoint it sent the first
    /// time and not now, QA45 H2/H3), so the items from here on are numbered differently. The stored copy
    /// is kept (the chain runs through it), but never silently: the log says so at once and the next start
    /// records it in the trail, naming the transaction and both changes, since a change of it may now be
    /// missing from the trail or stored twice.
    pub fn diverged(&mut self, stored: &ItemRow, replayed: &ItemRow) {
        let cause = format!(
            "the transaction committed at {} was decoded differently after a restart than before it: at \
             its item {} the stored item is {}, the replay has {} there (Postgres sent a rolled-back \
             savepoint of the streamed transaction the first time and not the second, or the other way round)",
            Lsn(replayed.commit_lsn),
            replayed.seq,
            change(stored),
            change(replayed)
        );
        let effect = "the items stored before the restart were kept as stored; from that item on, a change of \
                      the transaction may be missing from the trail or stored twice";
        self.record(replayed.commit_lsn, 1, &replayed.table_name, cause, effect);
    }

    /// Counts `n` items of a transaction that replayed otherwise than stored; the first such finding of
    /// a transaction is logged at once and kept for the trail (the next start records it as a gap).
    fn record(&mut self, commit_lsn: u64, n: usize, table: &str, cause: String, effect: &str) {
        self.diverged += n as u64;
        if self.diverged_at == Some(commit_lsn) {
            return;
        }
        self.diverged_at = Some(commit_lsn);
        tracing::error!(transaction = %Lsn(commit_lsn), items = n, "a replay does not match what was stored before the restart: {cause}; {effect} (recorded in the trail at the next start)");
        if let Some(p) = &self.pending {
            p.add(crate::pipeline::store::found_gap(
                table.to_string(),
                cause,
                effect,
            ));
        }
    }

    /// Whether an item at this commit position may be stored already; false once the replay is past the
    /// window (then the window can be dropped).
    pub fn covers(&self, commit_lsn: u64) -> bool {
        commit_lsn <= self.through
    }

    /// Whether this commit is the last one stored.
    pub fn last(&self, commit_lsn: u64) -> bool {
        commit_lsn == self.through
    }

    /// Say what the replay kept (once it is past the window).
    pub fn report(&self) {
        if self.kept == 0 {
            return;
        }
        tracing::info!(
            kept = self.kept,
            differing = self.differing,
            not_following_their_chain = self.unfit,
            another_change = self.diverged,
            "replay done: items stored before the restart were kept as stored, not written again \
             (`differing`: the replay would have written them otherwise, as context rows changed since \
             their commit or the configuration did)"
        );
    }

    /// The stored copy of `row`, if there is one. Items come in stream order across transactions; inside
    /// one, items held back for a context message can come later than their place, which costs a query.
    pub async fn stored_copy(&mut self, row: &ItemRow) -> anyhow::Result<Option<ItemRow>> {
        self.hold((row.commit_lsn, row.seq)).await?;
        let found = self.rows.remove(&row.id);
        if let Some(f) = &found {
            self.positions.remove(&(f.commit_lsn, f.seq, f.id));
            self.met.push(row.id);
            self.met_last = self.met_last.max(Some((f.commit_lsn, f.seq)));
        }
        Ok(found)
    }

    /// For an item of the replay with no stored copy (after [`StoredWindow::stored_copy`]): whether the
    /// store holds an item of its transaction after its position. Then the transaction was stored past
    /// it, in stream order, without it: the first decoding had no such item (a configuration change
    /// between crash and restart: a table mapped, a column no longer ignored). Otherwise it is of the part
    /// of a transaction not stored yet, and new.
    pub fn stored_after(&self, row: &ItemRow) -> bool {
        let after = (row.commit_lsn, row.seq.saturating_add(1), Uuid::nil());
        // A page that ends inside the transaction ends where more of it is stored.
        self.until
            .is_some_and(|u| u.0 == row.commit_lsn && u > (row.commit_lsn, row.seq))
            || self
                .met_last
                .is_some_and(|m| m.0 == row.commit_lsn && m.1 > row.seq)
            || self
                .positions
                .range(after..=(row.commit_lsn, u32::MAX, Uuid::max()))
                .next()
                .is_some()
    }

    /// The replay has an item the stored transaction has not (see [`StoredWindow::stored_after`]). It is
    /// not written: the transaction stands as it was stored (linked into its chain in the middle of it,
    /// the item would fork the chain, and verification would call it inserted with nothing to say why).
    /// That the replay had it is recorded, naming it (never its values).
    pub fn more(&mut self, row: &ItemRow) {
        let cause = format!(
            "the transaction committed at {} was decoded with more items after a restart than before it: \
             its item {} ({}) had no counterpart among the items stored before the restart (the \
             configuration changed in between: a table mapped, a column no longer ignored)",
            Lsn(row.commit_lsn),
            row.seq,
            change(row)
        );
        let effect =
            "the transaction was kept as stored before the restart: the replay's items it did not \
                      have were not written, so the trail lacks them";
        self.record(row.commit_lsn, 1, &row.table_name, cause, effect);
    }

    /// Holds the page of stored items from `at` on, unless the page held has `at` already.
    async fn hold(&mut self, at: (u64, u32)) -> anyhow::Result<()> {
        let held = self.loaded && at >= self.from && self.until.is_none_or(|u| at < u);
        if !held {
            let sizes = crate::store::query::stored_sizes(
                &self.ch,
                &self.source_id,
                at,
                self.through,
                PAGE_ITEMS,
            )
            .await?;
            let positions: Vec<((u64, u32), u64)> = sizes
                .iter()
                .map(|s| ((s.commit_lsn, s.seq), s.bytes))
                .collect();
            self.until = page_end(at, &positions, PAGE_ITEMS, PAGE_BYTES);
            let rows = crate::store::query::stored_between(
                &self.ch,
                &self.source_id,
                at,
                self.until,
                self.through,
            )
            .await?;
            self.from = at;
            self.positions = rows.iter().map(|r| (r.commit_lsn, r.seq, r.id)).collect();
            self.rows = rows.into_iter().map(|r| (r.id, r)).collect();
            self.loaded = true;
        }
        Ok(())
    }
}

/// "UPDATE of api_keys \"42\"": what a recorded divergence names of an item.
fn change(r: &ItemRow) -> String {
    format!(
        "{} of {} {:?}",
        r.action.trim_start_matches("AUDIT_ACTION_"),
        r.table_name,
        r.resource_id
    )
}

/// Where a page that starts at `from` ends (excluded), given the stored items' positions and sizes from
/// there in stream order (at most `max_items` of them): before the position at which `max_bytes` would be
/// passed, or at the last position listed when the list is full (that position's items may go on past
/// it). `None`: the page reaches the end of what is stored. A page always holds `from`'s items.
fn page_end(
    from: (u64, u32),
    sizes: &[((u64, u32), u64)],
    max_items: u64,
    max_bytes: u64,
) -> Option<(u64, u32)> {
    let mut total = 0u64;
    for (at, bytes) in sizes {
        total = total.saturating_add(*bytes);
        if total > max_bytes && *at > from {
            return Some(*at);
        }
    }
    if (sizes.len() as u64) < max_items {
        return None;
    }
    match sizes.last() {
        Some((last, _)) if *last > from => Some(*last),
        // Thousands of items at one position do not occur (a change makes one or two); should they, the
        // page holds that one position.
        _ => Some((from.0, from.1.saturating_add(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::page_end;

    #[test]
    fn pages_end_at_a_position_boundary_within_their_bounds() {
        let at = |l, s| (l, s);
        let small = |l, s| ((l, s), 100u64);
        // Everything fits: the page reaches the end.
        assert_eq!(
            page_end(at(1, 0), &[small(1, 0), small(1, 1), small(2, 0)], 10, 1000),
            None
        );
        // The byte bound falls inside position (2, 0): the page ends before it.
        let sizes = [small(1, 0), small(1, 1), ((2, 0), 900), ((2, 0), 10)];
        assert_eq!(page_end(at(1, 0), &sizes, 10, 1000), Some(at(2, 0)));
        // One huge first item still makes a page of its own position.
        let huge = [((1, 0), 5000), small(1, 1)];
        assert_eq!(page_end(at(1, 0), &huge, 10, 1000), Some(at(1, 1)));
        // A full list ends the page at its last position (whose items may go on).
        let full = [small(1, 0), small(1, 1), small(1, 2)];
        assert_eq!(page_end(at(1, 0), &full, 3, 1000), Some(at(1, 2)));
        let one_position = [small(1, 0), small(1, 0), small(1, 0)];
        assert_eq!(page_end(at(1, 0), &one_position, 3, 1000), Some(at(1, 1)));
    }
}

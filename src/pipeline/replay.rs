//! What a replay keeps. After a restart Postgres streams again every transaction it was not told is
//! stored, and some of them (whole, or the first part of a large one) are in ClickHouse already. Those
//! items stand as stored: written again they could differ from the stored copy (context rows are joined as
//! they are at the restart, not as they were at the commit), and two versions of one item would let a read
//! show either actor, and break the chain where merges keep the first copy.

use std::collections::HashMap;
use uuid::Uuid;

use crate::capture::Lsn;
use crate::store::row::ItemRow;

/// Stored items read per query: a page holds them in memory until the replay reaches them.
const PAGE: u64 = 5000;

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
    loaded: bool,
    /// Items found stored and kept; of them, those the replay would have written otherwise (context rows
    /// changed since their commit, or another configuration), and those that do not follow their chain.
    pub kept: u64,
    pub differing: u64,
    pub unfit: u64,
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
            loaded: false,
            kept: 0,
            differing: 0,
            unfit: 0,
        })
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
            "replay done: items stored before the restart were kept as stored, not written again \
             (`differing`: the replay would have written them otherwise, as context rows changed since \
             their commit or the configuration did)"
        );
    }

    /// The stored copy of `row`, if there is one. Items come in stream order across transactions; inside
    /// one, items held back for a context message can come later than their place, which costs a query.
    pub async fn stored_copy(&mut self, row: &ItemRow) -> anyhow::Result<Option<ItemRow>> {
        let at = (row.commit_lsn, row.seq);
        let held = self.loaded && at >= self.from && self.until.is_none_or(|u| at < u);
        if !held {
            let rows =
                crate::store::query::stored_from(&self.ch, &self.source_id, at, self.through, PAGE)
                    .await?;
            // A full page may end inside one position's items: the next page starts at that position.
            self.until = (rows.len() as u64 >= PAGE)
                .then(|| rows.last().map(|r| (r.commit_lsn, r.seq)))
                .flatten();
            self.from = at;
            self.rows = rows.into_iter().map(|r| (r.id, r)).collect();
            self.loaded = true;
        }
        Ok(self.rows.remove(&row.id))
    }
}

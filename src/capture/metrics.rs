//! Figures of a running capture, shared by the pipeline that updates them and the API's /metrics and
//! /readyz that read them (neither needs to know the other).

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct CaptureMetrics {
    /// An INSERT kept open across a transaction's batches failed in this process: what follows is stored
    /// batch by batch (each retried in place), so a ClickHouse that refuses large INSERTs (its memory) is
    /// not met with the same one again and again (QA46 M1).
    pub open_inserts_off: std::sync::atomic::AtomicBool,
    pub items_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub batch_items_last: AtomicU64,
    pub insert_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub acked_lsn: AtomicU64,
    pub received_lsn: AtomicU64,
    pub server_wal_end: AtomicU64,
    /// Commit time (µs) of the last acknowledged transaction.
    pub last_commit_time_us: AtomicI64,
    /// When (µs) the reader last heard from Postgres.
    pub last_server_contact_us: AtomicI64,
    /// `<prefix>:event` messages waltrail did not seal (recorded as rejected events).
    pub rejected_events: AtomicU64,
    /// Context messages not trusted (unsigned or badly signed while signatures are required).
    pub rejected_contexts: AtomicU64,
    /// The slot's `wal_status`, as [`slot_status_code`] numbers it (0: not known yet).
    pub slot_wal_status: AtomicU64,
    /// Bytes of WAL that may still be written before Postgres invalidates the slot (-1: no limit or unknown).
    pub slot_safe_wal_bytes: AtomicI64,
    /// WAL Postgres keeps for the slot, from its restart position (-1: unknown). Held back by the oldest
    /// transaction open on the source when decoding passed it, not only by waltrail.
    pub slot_retained_bytes: AtomicI64,
    /// WAL written since what waltrail confirmed (-1: unknown): what waltrail has not yet stored.
    pub slot_unconfirmed_bytes: AtomicI64,
    /// Age (ms) of the oldest transaction open on the source database (-1: none or unknown).
    pub source_oldest_xact_ms: AtomicI64,
    /// Bytes of streamed, not yet committed transactions held in the spill directory.
    pub spill_bytes: Arc<AtomicU64>,
    /// Capture confirms nothing to Postgres beyond this position: a report in the store names it first
    /// (`store::sources`), so a slot found further on at start was moved by something else.
    pub confirm_bound: AtomicU64,
    /// How long after its commit the server sent the last transaction read (µs, both on the server's
    /// clock, so no clock skew enters): milliseconds when capture keeps up, seconds while it catches up.
    pub stream_lag_us: AtomicI64,
    /// Checkpoints stored but not yet appended to `integrity.checkpoint_file` (it refuses them).
    pub checkpoints_undelivered: AtomicU64,
    /// Relations in the stream placed in no mapped table (a partition detached or dropped before its
    /// changes were captured, whose table could not be told): their changes are not audited.
    pub unplaced_relations: AtomicU64,
    /// Signalled when a session first streams, its start checks passed: what may change the store beside
    /// capture (retention) waits for it, so a start that is refused leaves the store as it found it.
    pub started: tokio::sync::Notify,
}

/// `reserved` 1, `extended` 2, `unreserved` 3, `lost` 4; anything else 0.
pub fn slot_status_code(wal_status: Option<&str>) -> u64 {
    match wal_status {
        Some("reserved") => 1,
        Some("extended") => 2,
        Some("unreserved") => 3,
        Some("lost") => 4,
        _ => 0,
    }
}

pub fn slot_status_name(code: u64) -> &'static str {
    match code {
        1 => "reserved",
        2 => "extended",
        3 => "unreserved",
        4 => "lost",
        _ => "unknown",
    }
}

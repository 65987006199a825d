//! Figures of a running capture, shared by the pipeline that updates them and the API's /metrics and
//! /readyz that read them (neither needs to know the other).

use std::sync::atomic::{AtomicI64, AtomicU64};

#[derive(Debug, Default)]
pub struct CaptureMetrics {
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
}

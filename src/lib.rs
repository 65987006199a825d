//! waltrail: an audit trail read from the Postgres write-ahead log and stored in ClickHouse.
//!
//! Data flows `capture` (replication protocol, pgoutput) → `audit` (mapping, diffs, attribution) →
//! `store` (ClickHouse); `pipeline` wires them together with acknowledgement.

pub mod api;
pub mod audit;
pub mod capture;
pub mod config;
pub mod pipeline;
pub mod store;

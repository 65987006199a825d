//! waltrail: an audit trail read from the Postgres write-ahead log and stored in ClickHouse.
//!
//! Data flows `capture` (replication protocol, pgoutput, catalog, provisioning) → `audit` (mapping,
//! diffs, attribution, the item) → `store` (ClickHouse) → `api` (HTTP). A layer uses only those before it.
//! `pipeline` wires capture, audit and store with acknowledgement; `check` asks each layer for its findings.
//! Under all of them: `config` (the TOML file), `vocab` (the words they share), `pg` (Postgres
//! connections, TLS, quoting) and `finding` (a line of `check`), none of which uses a layer.

pub mod api;
pub mod audit;
pub mod capture;
pub mod check;
pub mod config;
pub mod finding;
pub mod pg;
pub mod pipeline;
pub mod store;
pub mod vocab;

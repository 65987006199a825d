//! Default values of every option, one function each (serde's `default = "..."` needs a path). README's
//! configuration tables list the same values.

use crate::vocab::PrincipalType;

pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_slot() -> String {
    "waltrail".into()
}
pub(super) fn default_publication() -> String {
    "waltrail".into()
}
pub(super) fn default_status_interval_ms() -> u64 {
    10_000
}
pub(super) fn default_connect_timeout_ms() -> u64 {
    10_000
}
pub(super) fn default_ch_url() -> String {
    "http://127.0.0.1:8123".into()
}
pub(super) fn default_ch_database() -> String {
    "waltrail".into()
}
pub(super) fn default_ch_user() -> String {
    "default".into()
}
pub(super) fn default_ch_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_ch_replica_path() -> String {
    "/clickhouse/tables/{shard}/{database}/{table}".into()
}
pub(super) fn default_ch_replica_name() -> String {
    "{replica}".into()
}
pub(super) fn default_ch_ddl_timeout_s() -> u64 {
    60
}
pub(super) fn default_batch_max_items() -> usize {
    50_000
}
pub(super) fn default_batch_max_delay_ms() -> u64 {
    200
}
/// 16 MiB: ClickHouse makes a part of each insert, and half as many parts halved the merging it did after
/// a 1M-row transaction (10.5 → 6.9 CPU-s); 24 MiB gained nothing more and brought peak RSS near 100 MB.
pub(super) fn default_batch_max_bytes() -> usize {
    16 << 20
}
/// ClickHouse's default `max_insert_block_size`: an INSERT of more rows makes more than one part anyway.
pub(super) fn default_insert_max_items() -> usize {
    1 << 20
}
/// 256 MiB: a 300k-row transaction of ordinary rows (~250 MB) in one part, while ClickHouse's memory for
/// the block stays well inside a modest `max_memory_usage`.
pub(super) fn default_insert_max_bytes() -> usize {
    256 << 20
}
pub(super) fn default_buffer_bytes() -> usize {
    64 << 20
}
pub(super) fn default_channel_capacity() -> usize {
    4_096
}
pub(super) fn default_message_prefix() -> String {
    "waltrail".into()
}
pub(super) fn default_max_backoff_ms() -> u64 {
    30_000
}
pub(super) fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
pub(super) fn default_rate_limit() -> u32 {
    100
}
pub(super) fn default_key_cache_s() -> u64 {
    60
}
pub(super) fn default_max_pending_items() -> usize {
    10_000
}
pub(super) fn default_id() -> String {
    "id".into()
}
pub(super) fn default_principal_account() -> PrincipalType {
    PrincipalType::Account
}
pub(super) fn default_retention_days() -> u32 {
    30
}
pub(super) fn default_retention_interval_s() -> u64 {
    3_600
}
pub(super) fn default_max_pending_bytes() -> usize {
    16 << 20
}
pub(super) fn default_rewind_max_bytes() -> u64 {
    1 << 30
}
pub(super) fn default_max_value_bytes() -> usize {
    256 << 10
}
pub(super) fn default_watch_interval_ms() -> u64 {
    5_000
}
pub(super) fn default_checkpoint_every_items() -> u64 {
    1_000
}
pub(super) fn default_checkpoint_every_s() -> u64 {
    60
}
pub(super) fn default_batch_min_interval_ms() -> u64 {
    20
}
pub(super) fn default_negative_cache_s() -> u64 {
    10
}
pub(super) fn default_key_cache_entries() -> u64 {
    100_000
}
pub(super) fn default_pool_size() -> usize {
    4
}
pub(super) fn default_auth_failures() -> u32 {
    30
}
pub(super) fn default_max_connections() -> usize {
    1_024
}
pub(super) fn default_max_concurrent_requests() -> usize {
    64
}
pub(super) fn default_max_exports() -> usize {
    4
}
pub(super) fn default_max_exports_per_org() -> usize {
    2
}
pub(super) fn default_header_read_timeout_ms() -> u64 {
    10_000
}
pub(super) fn default_request_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_send_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_api_threads() -> usize {
    1
}
pub(super) fn default_api_nice() -> u8 {
    10
}

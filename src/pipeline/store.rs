//! The store task: inserts batches into ClickHouse in order, retrying each until ClickHouse takes it, and
//! confirms its commit after. It talks only to ClickHouse.

use anyhow::anyhow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

use super::ack::{Acker, Batch};
use super::retry::{Failure, InsertBackoff};
use crate::capture::metrics::CaptureMetrics;
use crate::store::writer::insert_encoded;

pub struct StoreTask {
    pub ch: clickhouse::Client,
    /// Where to append each stored checkpoint as a JSON line (`integrity.checkpoint_file`).
    pub checkpoint_file: Option<std::path::PathBuf>,
    pub timeout: std::time::Duration,
    pub acker: Arc<Acker>,
    pub metrics: Arc<CaptureMetrics>,
    pub shutdown: watch::Receiver<bool>,
}

impl StoreTask {
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) -> Result<(), Failure> {
        while let Some(b) = rx.recv().await {
            if b.count > 0 {
                self.store(&b).await?;
            }
            if !b.checkpoints.is_empty() {
                self.store_checkpoints(&b.checkpoints).await?;
            }
            self.acker.stored(b.commit);
        }
        Ok(())
    }

    /// Checkpoints are stored after the items they cover, retried the same way, and then copied to the
    /// checkpoint file. A copy that cannot be written is logged, not retried: the store holds them.
    async fn store_checkpoints(
        &self,
        rows: &[crate::store::row::CheckpointRow],
    ) -> Result<(), Failure> {
        let mut backoff = InsertBackoff::default();
        let mut attempts = 0u32;
        loop {
            let r = tokio::time::timeout(
                self.timeout,
                crate::store::writer::insert_checkpoints(&self.ch, rows),
            )
            .await;
            let err = match r {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("insert timed out after {:?}", self.timeout),
            };
            attempts += 1;
            self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
            if *self.shutdown.borrow() && attempts >= 3 {
                return Err(Failure::Retry(anyhow!(
                    "stopping while ClickHouse refuses checkpoints ({err}); they are signed again at the next start"
                )));
            }
            tracing::warn!(error = %err, attempt = attempts, "storing checkpoints failed; retrying");
            tokio::time::sleep(backoff.next_wait()).await;
        }
        if let Some(path) = &self.checkpoint_file {
            use std::io::Write;
            let lines: String = rows
                .iter()
                .map(|r| serde_json::json!({"checkpoint": r.checkpoint()}).to_string() + "\n")
                .collect();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(lines.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(file = %path.display(), error = %e, "cannot append checkpoints to integrity.checkpoint_file");
            }
        }
        Ok(())
    }

    async fn store(&self, b: &Batch) -> Result<(), Failure> {
        let mut backoff = InsertBackoff::default();
        let mut attempts = 0u32;
        loop {
            let r = tokio::time::timeout(self.timeout, insert_encoded(&self.ch, &b.rows)).await;
            let err = match r {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("insert timed out after {:?}", self.timeout),
            };
            attempts += 1;
            self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
            if *self.shutdown.borrow() && attempts >= 3 {
                return Err(Failure::Retry(anyhow!(
                    "stopping while ClickHouse refuses inserts ({err}); {} items not stored stay unconfirmed in the slot and are read again at the next start",
                    b.count
                )));
            }
            tracing::warn!(error = %err, items = b.count, attempt = attempts, "ClickHouse insert failed; retrying (nothing is confirmed to Postgres meanwhile)");
            tokio::time::sleep(backoff.next_wait()).await;
        }
        self.metrics
            .items_written
            .fetch_add(b.count as u64, Ordering::Relaxed);
        self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .batch_items_last
            .store(b.count as u64, Ordering::Relaxed);
        tracing::debug!(items = b.count, bytes = b.rows.len(), "batch stored");
        Ok(())
    }
}

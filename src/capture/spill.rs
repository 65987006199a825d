//! Where the large in-progress transactions that Postgres streams (protocol 2, see
//! [`pgoutput::stream_part`](super::pgoutput::stream_part)) wait until they commit or roll back.
//!
//! Without streaming, Postgres's walsender spills such a transaction to the *source's* disk and reads it
//! back at commit (a quarter of its CPU for a 1M-row transaction, measured). Streaming moves that work here:
//! the changes go to local files as they arrive, so a transaction of any size costs waltrail a bounded
//! amount of memory (one block per open transaction).
//!
//! The changes hold every column, redacted ones too, so they never rest on disk in the clear: each block is
//! sealed with AES-256-GCM under a key made at start and kept only in this process's memory, with a nonce
//! that is never reused. The files are unlinked as soon as they are created: whatever way the process ends,
//! nothing is left, and what was written is unreadable without the key. A transaction's data is kept
//! nowhere else: after a restart Postgres streams open transactions again from their start.

use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Plaintext bytes gathered before a block is sealed and written.
pub const BLOCK_BYTES: usize = 1 << 20;

/// Streamed transactions in progress, by top-level xid.
pub struct Spill {
    dir: PathBuf,
    key: Arc<LessSafeKey>,
    /// The next nonce: one counter for every block of every file under this key.
    nonce: u64,
    block_bytes: usize,
    txns: HashMap<u32, TxnFile>,
    /// Bytes held (sealed on disk and in open blocks), for the metrics.
    held: Arc<AtomicU64>,
    /// The prefix of waltrail's own DDL event messages (`<attribution.message_prefix>:ddl`): only these
    /// are kept through a savepoint's cut (QA45 M1: any prefix ending in ":ddl" was, whole and unbounded).
    ddl_prefix: Vec<u8>,
    /// The prefix of context messages (`attribution.message_prefix`): one cut with a savepoint may have been
    /// the top level's (QA45 H1), and then what follows is marked as of unknown context.
    ctx_prefix: Vec<u8>,
}

struct TxnFile {
    file: File,
    /// Sealed blocks, in order.
    sealed: Vec<Block>,
    /// End of the file.
    end: u64,
    /// The block being filled (records: u32 length, little-endian, then the message) and its logical offset.
    tail: Vec<u8>,
    tail_start: u64,
    /// Where each subtransaction's first change is, so a rollback to its savepoint cuts from there.
    subxacts: HashMap<u32, u64>,
    /// Where the logical-decoding messages written since the last row change begin (None: no such message).
    /// Postgres 15 streams a message under the top-level transaction even when a savepoint emitted it, so
    /// those right before a subtransaction's first change may be its own: they go with it on a rollback
    /// (a context message of a rolled-back savepoint must never attribute the transaction).
    messages_since: Option<u64>,
    /// QA44: the DDL event messages among `messages_since`'s (tag and body), and as each subtransaction's
    /// first change found them: a rollback never takes them (a rewrite unrecorded is worse than a false alarm).
    /// Shared, so that a subtransaction's copy costs a pointer per message, and bounded by
    /// [`MAX_KEPT_DDL_BYTES`] (past it a stub is kept in a message's place, which the assembler records as
    /// an unreadable DDL message: a DDL event is never dropped unsaid).
    ddl_since: Vec<Arc<[u8]>>,
    ddl_since_bytes: usize,
    ddl_before_sub: HashMap<u32, Vec<Arc<[u8]>>>,
    /// Whether a context message is among `messages_since`'s, and was as each subtransaction's first
    /// change found them.
    ctx_since: bool,
    ctx_before_sub: HashMap<u32, bool>,
}

/// The suffix of the marker a cut leaves where it took a context message that may have been the top
/// level's (`<prefix>:cut`): the assembler attributes nothing after it by an earlier context (QA45 H1).
pub const CUT_SUFFIX: &str = ":cut";

/// DDL event messages kept through cuts, per transaction, in bytes (the triggers write a few hundred bytes
/// per table; a layout message a few kilobytes per published table).
const MAX_KEPT_DDL_BYTES: usize = 16 << 20;

/// Whether a streamed message (tag, then protocol 1's body: flags, LSN, prefix, NUL, ...) is one of
/// waltrail's DDL event messages.
fn is_ddl_message(tag: u8, body: &[u8], prefix: &[u8]) -> bool {
    message_prefix(tag, body) == Some(prefix)
}

fn message_prefix(tag: u8, body: &[u8]) -> Option<&[u8]> {
    if tag != b'M' {
        return None;
    }
    let rest = body.get(9..)?;
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A DDL message kept in place of one past [`MAX_KEPT_DDL_BYTES`]: the same flags, LSN and prefix with empty
/// content, which the assembler cannot read and so records as an unreadable DDL event.
fn ddl_stub(tag: u8, body: &[u8], prefix: &[u8]) -> Vec<u8> {
    empty_message(tag, body, prefix)
}

/// A transactional message of `prefix` with empty content, at the LSN of `body`'s (if any).
fn empty_message(tag: u8, body: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(prefix.len() + 15);
    r.push(tag);
    r.extend_from_slice(body.get(..9).unwrap_or(&[1, 0, 0, 0, 0, 0, 0, 0, 0]));
    r.extend_from_slice(prefix);
    r.push(0);
    r.extend_from_slice(&0u32.to_be_bytes());
    r
}

#[derive(Clone, Copy)]
struct Block {
    at: u64,
    sealed_len: usize,
    nonce: u64,
    plain_start: u64,
}

impl TxnFile {
    fn logical_len(&self) -> u64 {
        self.tail_start + self.tail.len() as u64
    }
    fn disk_bytes(&self) -> u64 {
        self.end
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("spill directory {dir}: {source} (capture.spill_dir: a writable directory with room for the largest transactions the source streams)")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("Postgres streamed a block of transaction {0} whose start was not seen")]
    UnknownTransaction(u32),
    #[error("a spilled block of transaction {0} failed its integrity check: the file was altered")]
    Corrupt(u32),
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

impl Spill {
    /// Spill files go into `dir` (checked writable now, so a bad setting fails at start).
    pub fn new(dir: &Path, held: Arc<AtomicU64>) -> Result<Spill, SpillError> {
        let rng = ring::rand::SystemRandom::new();
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut raw).map_err(|_| SpillError::Io {
            dir: dir.display().to_string(),
            source: io::Error::other("no randomness for the spill key"),
        })?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SpillError::Io {
            dir: dir.display().to_string(),
            source: io::Error::other("spill key rejected"),
        })?;
        let spill = Spill {
            dir: dir.to_owned(),
            key: Arc::new(LessSafeKey::new(key)),
            nonce: 0,
            block_bytes: BLOCK_BYTES,
            txns: HashMap::new(),
            held,
            ddl_prefix: b"waltrail:ddl".to_vec(),
            ctx_prefix: b"waltrail".to_vec(),
        };
        drop(spill.create()?);
        Ok(spill)
    }

    /// Whose DDL event messages are kept through cuts: `<message_prefix>:ddl`.
    pub fn with_message_prefix(mut self, message_prefix: &str) -> Spill {
        self.ddl_prefix = format!("{message_prefix}:ddl").into_bytes();
        self.ctx_prefix = message_prefix.as_bytes().to_vec();
        self
    }

    #[cfg(test)]
    fn with_block_bytes(mut self, n: usize) -> Spill {
        self.block_bytes = n;
        self
    }

    fn io(&self, source: io::Error) -> SpillError {
        SpillError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// A new file, already unlinked.
    fn create(&self) -> Result<File, SpillError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = self.dir.join(format!(
            ".waltrail-spill-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| self.io(e))?;
        std::fs::remove_file(&path).map_err(|e| self.io(e))?;
        Ok(file)
    }

    /// Streamed transactions held now.
    pub fn open_transactions(&self) -> usize {
        self.txns.len()
    }

    /// Publish the bytes held (each stream block's end does; so do sealing, rollbacks and commits).
    pub fn update_held(&self) {
        let n: u64 = self
            .txns
            .values()
            .map(|t| t.disk_bytes() + t.tail.len() as u64)
            .sum();
        self.held.store(n, Ordering::Relaxed);
    }

    /// A stream block of `xid` begins; its first block starts it afresh (after a reconnect Postgres sends an
    /// open transaction again from its start).
    pub fn start(&mut self, xid: u32, first: bool) -> Result<(), SpillError> {
        if first {
            let file = self.create()?;
            self.txns.insert(
                xid,
                TxnFile {
                    file,
                    sealed: Vec::new(),
                    end: 0,
                    tail: Vec::new(),
                    tail_start: 0,
                    subxacts: HashMap::new(),
                    messages_since: None,
                    ddl_since: Vec::new(),
                    ddl_since_bytes: 0,
                    ddl_before_sub: HashMap::new(),
                    ctx_since: false,
                    ctx_before_sub: HashMap::new(),
                },
            );
            self.update_held();
            Ok(())
        } else if self.txns.contains_key(&xid) {
            Ok(())
        } else {
            Err(SpillError::UnknownTransaction(xid))
        }
    }

    /// One change of the block's transaction `top`, made by `sub` (itself, a subtransaction, or 0: itself),
    /// as `tag` then `body` (protocol 1's form).
    pub fn append(&mut self, top: u32, sub: u32, tag: u8, body: &[u8]) -> Result<(), SpillError> {
        let block_bytes = self.block_bytes;
        let len = u32::try_from(body.len() + 1)
            .map_err(|_| self.io(io::Error::other("a streamed message over 4 GiB")))?;
        let ddl_prefix = &self.ddl_prefix;
        let ctx_prefix = &self.ctx_prefix;
        let Some(t) = self.txns.get_mut(&top) else {
            return Err(SpillError::UnknownTransaction(top));
        };
        let at = t.logical_len();
        if sub != 0 && sub != top && !t.subxacts.contains_key(&sub) {
            t.subxacts.insert(sub, t.messages_since.unwrap_or(at));
            t.ddl_before_sub.insert(sub, t.ddl_since.clone());
            t.ctx_before_sub.insert(sub, t.ctx_since);
        }
        match tag {
            b'M' => {
                t.messages_since.get_or_insert(at);
                // A context message, or the marker of one cut before (a later cut leaves it again).
                if message_prefix(tag, body).is_some_and(|p| {
                    p.strip_prefix(ctx_prefix.as_slice())
                        .is_some_and(|rest| rest.is_empty() || rest == CUT_SUFFIX.as_bytes())
                }) {
                    t.ctx_since = true;
                }
                if is_ddl_message(tag, body, ddl_prefix) {
                    let kept: Vec<u8> = if t.ddl_since_bytes + body.len() < MAX_KEPT_DDL_BYTES {
                        let mut r = Vec::with_capacity(body.len() + 1);
                        r.push(tag);
                        r.extend_from_slice(body);
                        r
                    } else {
                        ddl_stub(tag, body, ddl_prefix)
                    };
                    t.ddl_since_bytes += kept.len();
                    t.ddl_since.push(kept.into());
                }
            }
            b'I' | b'U' | b'D' | b'T' => {
                t.messages_since = None;
                t.ddl_since.clear();
                t.ddl_since_bytes = 0;
                t.ctx_since = false;
            }
            _ => {}
        }
        if t.tail.capacity() == 0 {
            t.tail.reserve(block_bytes + (64 << 10));
        }
        t.tail.extend_from_slice(&len.to_le_bytes());
        t.tail.push(tag);
        t.tail.extend_from_slice(body);
        if t.tail.len() >= block_bytes {
            self.seal(top)?;
        }
        Ok(())
    }

    fn seal(&mut self, top: u32) -> Result<(), SpillError> {
        let n = self.nonce;
        self.nonce += 1;
        let key = self.key.clone();
        let Some(t) = self.txns.get_mut(&top) else {
            return Err(SpillError::UnknownTransaction(top));
        };
        let mut buf = std::mem::take(&mut t.tail);
        let plain_len = buf.len() as u64;
        key.seal_in_place_append_tag(nonce(n), Aad::empty(), &mut buf)
            .map_err(|_| SpillError::Corrupt(top))?;
        let write = t.file.write_all_at(&buf, t.end);
        let block = Block {
            at: t.end,
            sealed_len: buf.len(),
            nonce: n,
            plain_start: t.tail_start,
        };
        t.end += buf.len() as u64;
        t.tail_start += plain_len;
        t.sealed.push(block);
        // The buffer is reused for the next block.
        buf.clear();
        t.tail = buf;
        if let Err(e) = write {
            return Err(self.io(e));
        }
        self.update_held();
        Ok(())
    }

    /// `subxid` of `xid` rolled back (`subxid == xid`: all of it). A transaction not held (it streamed
    /// nothing this session) has nothing to undo.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), SpillError> {
        if xid == subxid {
            self.txns.remove(&xid);
            self.update_held();
            return Ok(());
        }
        let key = self.key.clone();
        let Some(t) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        let keep = match (t.subxacts.get(&subxid), t.messages_since) {
            (Some(_), _) => t.ddl_before_sub.get(&subxid).cloned().unwrap_or_default(),
            (None, Some(_)) => t.ddl_since.clone(),
            (None, None) => Vec::new(),
        };
        // A context message among those cut may have been the top level's (Postgres 15 does not say whose):
        // what follows must not be attributed by the one before it.
        let ctx_cut = match (t.subxacts.get(&subxid), t.messages_since) {
            (Some(_), _) => t.ctx_before_sub.get(&subxid).copied().unwrap_or(false),
            (None, Some(_)) => t.ctx_since,
            (None, None) => false,
        };
        let cut = match (t.subxacts.get(&subxid), t.messages_since) {
            (Some(&cut), _) => cut,
            // No row change of it was streamed, but the messages since the last row change may be its own
            // (Postgres 15 streams them under the top-level transaction): a context message of a
            // rolled-back savepoint must never attribute the transaction (QA34 M1). One of the top level's
            // among them goes too: its changes are then attributed without it, never by the wrong one.
            (None, Some(since)) => since,
            (None, None) => return Ok(()),
        };
        // Subtransactions that began after it are its own (nested) or already rolled back with it.
        t.subxacts.retain(|_, at| *at < cut);
        let subxacts = &t.subxacts;
        t.ddl_before_sub.retain(|sub, _| subxacts.contains_key(sub));
        t.ctx_before_sub.retain(|sub, _| subxacts.contains_key(sub));
        t.messages_since = t.messages_since.filter(|at| *at < cut);
        if t.messages_since.is_none() {
            t.ddl_since.clear();
            t.ddl_since_bytes = 0;
            t.ctx_since = false;
        }
        if cut >= t.tail_start {
            t.tail.truncate((cut - t.tail_start) as usize);
        } else {
            let i = t
                .sealed
                .iter()
                .rposition(|b| b.plain_start <= cut)
                .unwrap_or(0);
            let b = t.sealed[i];
            let mut plain = open_block(&t.file, &key, &b).ok_or(SpillError::Corrupt(xid))?;
            plain.truncate((cut - b.plain_start) as usize);
            let cut_file = t.file.set_len(b.at);
            t.sealed.truncate(i);
            t.end = b.at;
            t.tail = plain;
            t.tail_start = b.plain_start;
            if let Err(e) = cut_file {
                return Err(self.io(e));
            }
        }
        self.update_held();
        if ctx_cut {
            let mut marker = self.ctx_prefix.clone();
            marker.extend_from_slice(CUT_SUFFIX.as_bytes());
            let m = empty_message(b'M', &[], &marker);
            self.append(xid, xid, m[0], &m[1..])?;
        }
        for r in keep {
            if let Some((&tag, body)) = r.split_first() {
                self.append(xid, xid, tag, body)?;
            }
        }
        Ok(())
    }

    /// `xid` committed: its changes, in order, and the transaction is no longer held.
    pub fn finish(&mut self, xid: u32) -> Result<Replay, SpillError> {
        let Some(t) = self.txns.remove(&xid) else {
            return Err(SpillError::UnknownTransaction(xid));
        };
        self.update_held();
        Ok(Replay {
            xid,
            key: self.key.clone(),
            file: t.file,
            sealed: t.sealed.into_iter(),
            tail: Some(t.tail),
            current: Vec::new(),
            pos: 0,
        })
    }
}

fn open_block(file: &File, key: &LessSafeKey, b: &Block) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; b.sealed_len];
    file.read_exact_at(&mut buf, b.at).ok()?;
    let plain_len = key
        .open_in_place(nonce(b.nonce), Aad::empty(), &mut buf)
        .ok()?
        .len();
    buf.truncate(plain_len);
    Some(buf)
}

/// A committed streamed transaction's messages, read back block by block.
pub struct Replay {
    xid: u32,
    key: Arc<LessSafeKey>,
    file: File,
    sealed: std::vec::IntoIter<Block>,
    tail: Option<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Replay {
    /// The next message (protocol 1's form), or None at the end.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, SpillError> {
        while self.pos >= self.current.len() {
            let next = match self.sealed.next() {
                Some(b) => {
                    open_block(&self.file, &self.key, &b).ok_or(SpillError::Corrupt(self.xid))?
                }
                None => match self.tail.take() {
                    Some(t) => t,
                    None => return Ok(None),
                },
            };
            self.current = next;
            self.pos = 0;
        }
        let rest = &self.current[self.pos..];
        let Some(len) = rest.get(..4) else {
            return Err(SpillError::Corrupt(self.xid));
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < 4 + len {
            return Err(SpillError::Corrupt(self.xid));
        }
        // A copy of its own rather than a slice of the block: the messages are dropped on the assemble task's
        // thread, and a block's reference count shared by both threads cost more than the copy.
        let msg = Bytes::copy_from_slice(&self.current[self.pos + 4..self.pos + 4 + len]);
        self.pos += 4 + len;
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("waltrail-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn spill(block: usize) -> Spill {
        Spill::new(&dir(), Arc::new(AtomicU64::new(0)))
            .unwrap()
            .with_block_bytes(block)
    }

    fn all(mut r: Replay) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(String::from_utf8(m.to_vec()).unwrap());
        }
        out
    }

    fn msg(i: usize) -> String {
        format!("change number {i} with some padding to fill blocks")
    }

    #[test]
    fn messages_come_back_in_order_across_blocks() {
        for block in [16, 100, 1 << 20] {
            let mut s = spill(block);
            s.start(7, true).unwrap();
            for i in 0..500 {
                s.append(7, 7, b'I', msg(i).as_bytes()).unwrap();
            }
            let got = all(s.finish(7).unwrap());
            let want: Vec<String> = (0..500).map(|i| format!("I{}", msg(i))).collect();
            assert_eq!(got, want, "block size {block}");
            assert_eq!(s.open_transactions(), 0);
        }
    }

    #[test]
    fn a_rolled_back_savepoint_cuts_its_changes_and_its_children() {
        for block in [16, 300, 1 << 20] {
            let mut s = spill(block);
            s.start(10, true).unwrap();
            for i in 0..50 {
                s.append(10, 10, b'I', msg(i).as_bytes()).unwrap();
            }
            // Subtransaction 11, with a nested 12, rolled back; then 13 kept.
            for i in 50..80 {
                s.append(10, 11, b'I', msg(i).as_bytes()).unwrap();
            }
            s.append(10, 12, b'I', msg(80).as_bytes()).unwrap();
            s.abort(10, 11).unwrap();
            // A block boundary in between, and a stop/start of the stream.
            s.start(10, false).unwrap();
            for i in 81..100 {
                s.append(10, 13, b'U', msg(i).as_bytes()).unwrap();
            }
            // Rolling back what made no streamed change undoes nothing.
            s.abort(10, 99).unwrap();
            let got = all(s.finish(10).unwrap());
            let mut want: Vec<String> = (0..50).map(|i| format!("I{}", msg(i))).collect();
            want.extend((81..100).map(|i| format!("U{}", msg(i))));
            assert_eq!(got, want, "block size {block}");
        }
    }

    /// Postgres 15 streams a savepoint's logical-decoding message under the top-level transaction: a
    /// message right before a rolled-back subtransaction's first change goes with it, never attributing
    /// what stays; one followed by a change of the transaction itself stays.
    #[test]
    fn a_message_of_a_rolled_back_savepoint_goes_with_it() {
        let mut s = spill(1 << 20);
        s.start(20, true).unwrap();
        s.append(20, 20, b'I', b"before").unwrap();
        s.append(20, 20, b'M', b"kept: a change of the transaction follows")
            .unwrap();
        s.append(20, 20, b'I', b"own").unwrap();
        s.append(20, 20, b'M', b"the savepoint's").unwrap();
        s.append(20, 21, b'I', b"rolled back").unwrap();
        s.abort(20, 21).unwrap();
        s.append(20, 20, b'I', b"after").unwrap();
        assert_eq!(
            all(s.finish(20).unwrap()),
            [
                "Ibefore",
                "Mkept: a change of the transaction follows",
                "Iown",
                "Iafter"
            ]
        );
    }

    /// QA45 M1: only waltrail's own DDL messages (`<prefix>:ddl`, exactly) are kept through a cut, and
    /// past a bound a stub stands in for a kept message (the assembler records it as unreadable).
    #[test]
    fn only_own_ddl_messages_are_kept_through_a_cut_and_they_are_bounded() {
        let m = |prefix: &str, content: &str| {
            let mut b = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 7];
            b.extend_from_slice(prefix.as_bytes());
            b.push(0);
            b.extend_from_slice(&(content.len() as u32).to_be_bytes());
            b.extend_from_slice(content.as_bytes());
            b
        };
        let mut s = spill(1 << 20).with_message_prefix("acme");
        s.start(40, true).unwrap();
        s.append(40, 40, b'I', b"before").unwrap();
        s.append(40, 40, b'M', &m("acme:ddl", "own")).unwrap();
        s.append(40, 40, b'M', &m("evil:ddl", "other")).unwrap();
        s.append(40, 40, b'M', &m("waltrail:ddl", "not this prefix"))
            .unwrap();
        s.append(40, 41, b'I', b"rolled back").unwrap();
        s.abort(40, 41).unwrap();
        let got = all(s.finish(40).unwrap());
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[1].contains("acme:ddl") && got[1].ends_with("own"),
            "{got:?}"
        );

        // Over the bound: the message past it comes back as a stub with empty content.
        let big = "x".repeat(MAX_KEPT_DDL_BYTES / 2);
        let mut s = spill(1 << 20).with_message_prefix("acme");
        s.start(50, true).unwrap();
        s.append(50, 50, b'I', b"before").unwrap();
        for _ in 0..3 {
            s.append(50, 50, b'M', &m("acme:ddl", &big)).unwrap();
        }
        s.append(50, 51, b'I', b"rolled back").unwrap();
        s.abort(50, 51).unwrap();
        let mut r = s.finish(50).unwrap();
        let mut lens = Vec::new();
        while let Some(msg) = r.next_message().unwrap() {
            lens.push(msg.len());
        }
        assert_eq!(lens.len(), 4, "{lens:?}");
        assert!(
            lens[1] > big.len() && lens[2] < 64 && lens[3] < 64,
            "{lens:?}"
        );
    }

    /// QA34 M1: a rolled-back savepoint that streamed no row change (its writes went to tables not
    /// published) still takes the messages since the transaction's last row change with it.
    #[test]
    fn a_savepoint_with_no_streamed_change_takes_its_message_with_it() {
        let mut s = spill(64);
        s.start(30, true).unwrap();
        s.append(30, 30, b'I', b"before").unwrap();
        s.append(30, 30, b'M', b"the savepoint's").unwrap();
        s.abort(30, 31).unwrap();
        s.append(30, 30, b'I', b"after").unwrap();
        s.abort(30, 32).unwrap();
        assert_eq!(all(s.finish(30).unwrap()), ["Ibefore", "Iafter"]);
    }

    #[test]
    fn interleaved_transactions_and_whole_aborts() {
        let mut s = spill(64);
        s.start(1, true).unwrap();
        s.append(1, 1, b'I', b"a1").unwrap();
        s.start(2, true).unwrap();
        s.append(2, 2, b'I', b"b1").unwrap();
        s.append(1, 0, b'O', b"origin").unwrap();
        s.abort(2, 2).unwrap();
        assert!(matches!(
            s.finish(2),
            Err(SpillError::UnknownTransaction(2))
        ));
        // A first block starts the transaction afresh: what a previous session streamed is gone.
        s.start(3, true).unwrap();
        s.append(3, 3, b'I', b"old").unwrap();
        s.start(3, true).unwrap();
        s.append(3, 3, b'I', b"new").unwrap();
        assert_eq!(all(s.finish(1).unwrap()), ["Ia1", "Oorigin"]);
        assert_eq!(all(s.finish(3).unwrap()), ["Inew"]);
        assert!(matches!(
            s.start(4, false),
            Err(SpillError::UnknownTransaction(4))
        ));
        assert!(s.append(4, 4, b'I', b"x").is_err());
    }

    #[test]
    fn nothing_rests_on_disk_in_the_clear_and_no_file_is_left() {
        let d = dir().join("clear");
        std::fs::create_dir_all(&d).unwrap();
        let mut s = Spill::new(&d, Arc::new(AtomicU64::new(0)))
            .unwrap()
            .with_block_bytes(64);
        s.start(5, true).unwrap();
        let secret = "sk_live_0123456789abcdef";
        for _ in 0..100 {
            s.append(5, 5, b'I', secret.as_bytes()).unwrap();
        }
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "files are unlinked"
        );
        let t = s.txns.get(&5).unwrap();
        let mut on_disk = vec![0u8; t.end as usize];
        t.file.read_exact_at(&mut on_disk, 0).unwrap();
        assert!(on_disk.len() > 1000);
        assert!(!on_disk
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()));
        // An altered block is refused, not read.
        t.file.write_all_at(&[on_disk[10] ^ 1], 10).unwrap();
        let mut r = s.finish(5).unwrap();
        assert!(matches!(r.next_message(), Err(SpillError::Corrupt(5))));
    }

    #[test]
    fn an_unusable_directory_is_refused_at_start() {
        let e = Spill::new(
            Path::new("/nonexistent/waltrail/spill"),
            Arc::new(AtomicU64::new(0)),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("capture.spill_dir"), "{e}");
    }
}

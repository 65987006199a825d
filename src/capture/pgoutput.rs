//! Decoder for the `pgoutput` logical replication protocol: version 1's messages, and version 2's framing of
//! large in-progress transactions streamed in blocks ([`stream_part`]).
//!
//! Every message is decoded with bounds-checked reads: truncated or garbage input is an error, never a panic,
//! and an unknown message tag is an error too: silently skipping it could drop a change.
//! Tuple values stay as `Bytes` slices of the received frame, so a 1 MB text value is not copied here.

use bytes::Bytes;
use std::fmt;

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message truncated: needed {needed} more bytes at offset {offset} of a {kind} message")]
    Truncated {
        kind: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("unknown pgoutput message tag {0:?} (0x{0:02x}); this waltrail does not know it and stops rather than skip a change")]
    UnknownMessage(u8),
    #[error("invalid pgoutput {kind} message: {detail}")]
    Invalid { kind: &'static str, detail: String },
    #[error("empty pgoutput message")]
    Empty,
}

/// One column value of a tuple as pgoutput sends it.
#[derive(Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// A TOASTed value that did not change: pgoutput does not send it.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

// Values may hold secrets (redacted columns): Debug shows only their size.
impl fmt::Debug for TupleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TupleValue::Null => f.write_str("Null"),
            TupleValue::UnchangedToast => f.write_str("UnchangedToast"),
            TupleValue::Text(b) => write!(f, "Text({} bytes)", b.len()),
            TupleValue::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

pub type Tuple = Vec<TupleValue>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record: known at Begin, so item ids can be fixed before the commit arrives.
    pub final_lsn: u64,
    /// Commit time in microseconds since the Unix epoch.
    pub commit_time_us: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: u64,
    /// End of the commit record: the position to confirm once this transaction is stored.
    pub end_lsn: u64,
    pub commit_time_us: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: the column is part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

impl RelationColumn {
    pub fn is_key(&self) -> bool {
        self.flags & 1 == 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// 'd' default, 'n' nothing, 'f' full, 'i' index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
    /// Not on the wire: set by capture when this relation is a partition of a configured partitioned table
    /// (the publication sends a partition's changes under its own name). `namespace` and `name` then name
    /// the configured table, and this the partition, `schema.table`.
    pub partition: Option<String>,
    /// Not on the wire: configured columns missing from this Relation that capture found dropped from the
    /// table (their column numbers gone from the catalog, and no name here that could be one of them under
    /// another name), or that `--accept-columns` takes for dropped.
    pub dropped: Vec<String>,
    /// Set by capture: a relation that belongs to no table it can tell (named like a mapped table, yet
    /// not it): bound to no mapping whatever its name.
    pub unplaced: bool,
}

/// Which old tuple an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// 'K': only the replica identity key columns.
    Key,
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin {
        commit_lsn: u64,
        name: String,
    },
    Relation(Relation),
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation_id: u32,
        new: Tuple,
    },
    Update {
        relation_id: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation_id: u32,
        old_kind: OldKind,
        old: Tuple,
    },
    Truncate {
        options: u8,
        relation_ids: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Bytes,
    },
}

impl LogicalMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            LogicalMessage::Begin(_) => "Begin",
            LogicalMessage::Commit(_) => "Commit",
            LogicalMessage::Origin { .. } => "Origin",
            LogicalMessage::Relation(_) => "Relation",
            LogicalMessage::Type { .. } => "Type",
            LogicalMessage::Insert { .. } => "Insert",
            LogicalMessage::Update { .. } => "Update",
            LogicalMessage::Delete { .. } => "Delete",
            LogicalMessage::Truncate { .. } => "Truncate",
            LogicalMessage::Message { .. } => "Message",
        }
    }
}

struct Reader {
    buf: Bytes,
    pos: usize,
    kind: &'static str,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let available = self.buf.len() - self.pos;
        if available < n {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                offset: self.pos,
                needed: n - available,
            });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// A fixed-size field, copied out: no `Bytes` handle (an atomic count up and down) per integer read.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let available = self.buf.len() - self.pos;
        if available < N {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                offset: self.pos,
                needed: N - available,
            });
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                offset: self.pos,
                needed: 1,
            });
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|e| DecodeError::Invalid {
            kind: self.kind,
            detail: format!("string at offset {} is not UTF-8: {e}", self.pos),
        })?;
        let s = s.to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    fn invalid(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            kind: self.kind,
            detail: detail.into(),
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos != self.buf.len() {
            return Err(self.invalid(format!(
                "{} trailing bytes after the message",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(self.invalid(format!("negative column count {n}")));
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let v = match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' | b'b' => {
                    let binary = self.buf[self.pos - 1] == b'b';
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(self.invalid(format!("negative value length {len}")));
                    }
                    let data = self.take(len as usize)?;
                    if binary {
                        TupleValue::Binary(data)
                    } else {
                        TupleValue::Text(data)
                    }
                }
                other => return Err(self.invalid(format!("unknown tuple value kind {other:#04x}"))),
            };
            out.push(v);
        }
        Ok(out)
    }
}

fn pg_time_to_unix_us(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_OFFSET_US)
}

/// Decode one pgoutput message (the payload of an XLogData frame).
pub fn decode(buf: Bytes) -> Result<LogicalMessage, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError::Empty);
    };
    let kind = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    let mut r = Reader { buf, pos: 1, kind };
    let msg = match tag {
        b'B' => LogicalMessage::Begin(Begin {
            final_lsn: r.u64()?,
            commit_time_us: pg_time_to_unix_us(r.i64()?),
            xid: r.u32()?,
        }),
        b'C' => LogicalMessage::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time_us: pg_time_to_unix_us(r.i64()?),
        }),
        b'O' => LogicalMessage::Origin {
            commit_lsn: r.u64()?,
            name: r.cstr()?,
        },
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            if n < 0 {
                return Err(r.invalid(format!("negative column count {n}")));
            }
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                columns.push(RelationColumn {
                    flags: r.u8()?,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            LogicalMessage::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
                partition: None,
                dropped: Vec::new(),
                unplaced: false,
            })
        }
        b'Y' => LogicalMessage::Type {
            id: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let relation_id = r.u32()?;
            match r.u8()? {
                b'N' => {}
                other => {
                    return Err(r.invalid(format!(
                        "expected 'N' before the new tuple, got {other:#04x}"
                    )))
                }
            }
            LogicalMessage::Insert {
                relation_id,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation_id = r.u32()?;
            let (old, marker) = match r.u8()? {
                b'K' => (Some((OldKind::Key, r.tuple()?)), r.u8()?),
                b'O' => (Some((OldKind::Full, r.tuple()?)), r.u8()?),
                other => (None, other),
            };
            if marker != b'N' {
                return Err(r.invalid(format!(
                    "expected 'N' before the new tuple, got {marker:#04x}"
                )));
            }
            LogicalMessage::Update {
                relation_id,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation_id = r.u32()?;
            let old_kind = match r.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => return Err(r.invalid(format!("expected 'K' or 'O', got {other:#04x}"))),
            };
            LogicalMessage::Delete {
                relation_id,
                old_kind,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let options = r.u8()?;
            // Bound the allocation by what the frame can hold, not by what the count claims.
            let remaining = (r.buf.len() - r.pos) / 4;
            if n as usize > remaining {
                return Err(DecodeError::Truncated {
                    kind: "Truncate",
                    offset: r.pos,
                    needed: (n as usize - remaining) * 4,
                });
            }
            let mut relation_ids = Vec::with_capacity(n as usize);
            for _ in 0..n {
                relation_ids.push(r.u32()?);
            }
            LogicalMessage::Truncate {
                options,
                relation_ids,
            }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = r.u32()?;
            let content = r.take(len as usize)?;
            LogicalMessage::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content,
            }
        }
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    r.finish()?;
    Ok(msg)
}

/// Protocol 2 (Postgres 14+, `streaming 'on'`): a transaction larger than the server's
/// `logical_decoding_work_mem` is sent while still in progress, in blocks between Stream Start and Stream
/// Stop, each change carrying the xid of the (sub)transaction that made it; Stream Commit or Stream Abort
/// ends it later, with ordinary transactions sent in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPart {
    /// Not part of the streaming framing: an ordinary protocol 1 message (outside a stream block).
    Plain,
    /// A block of the top-level transaction `xid` begins; `first` on its first block.
    Start { xid: u32, first: bool },
    /// The current block ends.
    Stop,
    /// A message inside a block, made by (sub)transaction `xid` (0: the block's transaction itself): `tag`
    /// followed by `body` is the same message in protocol 1's form (the xid taken out), which [`decode`] reads.
    Change { xid: u32, tag: u8, body: Bytes },
    /// The streamed transaction `xid` committed: its changes are final.
    Commit { xid: u32, commit: Commit },
    /// `subxid` rolled back (`subxid == xid`: the whole transaction): its changes never happened.
    Abort { xid: u32, subxid: u32 },
}

/// Classify one message of a protocol 2 stream; `in_block` says whether a Stream Start is open.
/// Messages inside a block are checked only as far as their framing: the protocol 1 form is decoded, as
/// any message, when the transaction commits.
pub fn stream_part(buf: &Bytes, in_block: bool) -> Result<StreamPart, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError::Empty);
    };
    let kind = match tag {
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        _ => "streamed change",
    };
    let mut r = Reader {
        buf: buf.clone(),
        pos: 1,
        kind,
    };
    let part = match (tag, in_block) {
        (b'E', true) => StreamPart::Stop,
        (b'S' | b'c' | b'A', true) | (b'E', false) => {
            return Err(r.invalid(if in_block {
                "inside a stream block".to_owned()
            } else {
                "outside a stream block".to_owned()
            }))
        }
        (b'S', false) => {
            let xid = r.u32()?;
            let first = match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(r.invalid(format!("first-segment flag {other}"))),
            };
            StreamPart::Start { xid, first }
        }
        (b'c', false) => StreamPart::Commit {
            xid: r.u32()?,
            commit: Commit {
                flags: r.u8()?,
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time_us: pg_time_to_unix_us(r.i64()?),
            },
        },
        (b'A', false) => StreamPart::Abort {
            xid: r.u32()?,
            subxid: r.u32()?,
        },
        (_, false) => return Ok(StreamPart::Plain),
        // The replication origin of a streamed transaction comes inside its first block, without an xid.
        (b'O', true) => {
            r.pos = buf.len();
            StreamPart::Change {
                xid: 0,
                tag,
                body: buf.slice(1..),
            }
        }
        (b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M', true) => {
            let xid = r.u32()?;
            r.pos = buf.len();
            StreamPart::Change {
                xid,
                tag,
                body: buf.slice(5..),
            }
        }
        (other, true) => return Err(DecodeError::UnknownMessage(other)),
    };
    r.finish()?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn cstr(b: &mut BytesMut, s: &str) {
        b.put_slice(s.as_bytes());
        b.put_u8(0);
    }

    fn tuple(b: &mut BytesMut, vals: &[Option<&str>]) {
        b.put_i16(vals.len() as i16);
        for v in vals {
            match v {
                None => b.put_u8(b'n'),
                Some("<toast>") => b.put_u8(b'u'),
                Some(s) => {
                    b.put_u8(b't');
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
            }
        }
    }

    /// One valid message of every kind.
    fn samples() -> Vec<(Bytes, LogicalMessage)> {
        let mut out = Vec::new();
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(0x100);
        b.put_i64(1_000_000);
        b.put_u32(42);
        out.push((
            b.freeze(),
            LogicalMessage::Begin(Begin {
                final_lsn: 0x100,
                commit_time_us: 1_000_000 + PG_EPOCH_OFFSET_US,
                xid: 42,
            }),
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'C');
        b.put_u8(0);
        b.put_u64(0x100);
        b.put_u64(0x128);
        b.put_i64(5);
        out.push((
            b.freeze(),
            LogicalMessage::Commit(Commit {
                flags: 0,
                commit_lsn: 0x100,
                end_lsn: 0x128,
                commit_time_us: 5 + PG_EPOCH_OFFSET_US,
            }),
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16384);
        cstr(&mut b, "public");
        cstr(&mut b, "api_keys");
        b.put_u8(b'f');
        b.put_i16(2);
        b.put_u8(1);
        cstr(&mut b, "id");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        cstr(&mut b, "name");
        b.put_u32(25);
        b.put_i32(-1);
        out.push((
            b.freeze(),
            LogicalMessage::Relation(Relation {
                id: 16384,
                namespace: "public".into(),
                name: "api_keys".into(),
                replica_identity: b'f',
                partition: None,
                dropped: Vec::new(),
                unplaced: false,
                columns: vec![
                    RelationColumn {
                        flags: 1,
                        name: "id".into(),
                        type_oid: 23,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        flags: 0,
                        name: "name".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                ],
            }),
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(16384);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("1"), None]);
        out.push((
            b.freeze(),
            LogicalMessage::Insert {
                relation_id: 16384,
                new: vec![TupleValue::Text(Bytes::from_static(b"1")), TupleValue::Null],
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'O');
        tuple(&mut b, &[Some("1"), Some("a")]);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("1"), Some("<toast>")]);
        out.push((
            b.freeze(),
            LogicalMessage::Update {
                relation_id: 16384,
                old: Some((
                    OldKind::Full,
                    vec![
                        TupleValue::Text(Bytes::from_static(b"1")),
                        TupleValue::Text(Bytes::from_static(b"a")),
                    ],
                )),
                new: vec![
                    TupleValue::Text(Bytes::from_static(b"1")),
                    TupleValue::UnchangedToast,
                ],
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("2")]);
        out.push((
            b.freeze(),
            LogicalMessage::Update {
                relation_id: 16384,
                old: None,
                new: vec![TupleValue::Text(Bytes::from_static(b"2"))],
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'D');
        b.put_u32(16384);
        b.put_u8(b'K');
        tuple(&mut b, &[Some("1"), None]);
        out.push((
            b.freeze(),
            LogicalMessage::Delete {
                relation_id: 16384,
                old_kind: OldKind::Key,
                old: vec![TupleValue::Text(Bytes::from_static(b"1")), TupleValue::Null],
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_u32(2);
        b.put_u8(1);
        b.put_u32(1);
        b.put_u32(2);
        out.push((
            b.freeze(),
            LogicalMessage::Truncate {
                options: 1,
                relation_ids: vec![1, 2],
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'M');
        b.put_u8(1);
        b.put_u64(0x200);
        cstr(&mut b, "waltrail");
        b.put_u32(2);
        b.put_slice(b"{}");
        out.push((
            b.freeze(),
            LogicalMessage::Message {
                transactional: true,
                lsn: 0x200,
                prefix: "waltrail".into(),
                content: Bytes::from_static(b"{}"),
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'Y');
        b.put_u32(90000);
        cstr(&mut b, "public");
        cstr(&mut b, "mood");
        out.push((
            b.freeze(),
            LogicalMessage::Type {
                id: 90000,
                namespace: "public".into(),
                name: "mood".into(),
            },
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'O');
        b.put_u64(0x300);
        cstr(&mut b, "node1");
        out.push((
            b.freeze(),
            LogicalMessage::Origin {
                commit_lsn: 0x300,
                name: "node1".into(),
            },
        ));
        out
    }

    #[test]
    fn decodes_every_message_kind() {
        for (bytes, expected) in samples() {
            assert_eq!(decode(bytes).unwrap(), expected);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (bytes, _) in samples() {
            for cut in 0..bytes.len() {
                assert!(
                    decode(bytes.slice(..cut)).is_err(),
                    "cut at {cut} of {:?}",
                    bytes
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_tags_are_errors() {
        for (bytes, _) in samples() {
            let mut b = BytesMut::from(&bytes[..]);
            b.put_u8(0);
            assert!(decode(b.freeze()).is_err());
        }
        assert_eq!(
            decode(Bytes::from_static(b"Zxyz")),
            Err(DecodeError::UnknownMessage(b'Z'))
        );
        // Streaming messages (protocol 2) are not requested; receiving one is an error, not a skip.
        assert!(matches!(
            decode(Bytes::from_static(b"S\0\0\0\x01\0")),
            Err(DecodeError::UnknownMessage(b'S'))
        ));
        assert_eq!(decode(Bytes::new()), Err(DecodeError::Empty));
    }

    #[test]
    fn streaming_framing() {
        let plain = |b: &[u8]| stream_part(&Bytes::copy_from_slice(b), false);
        let inside = |b: &[u8]| stream_part(&Bytes::copy_from_slice(b), true);
        assert_eq!(
            plain(b"S\0\0\x01\x02\x01"),
            Ok(StreamPart::Start {
                xid: 0x102,
                first: true
            })
        );
        assert_eq!(inside(b"E"), Ok(StreamPart::Stop));
        let mut c = BytesMut::new();
        c.put_u8(b'c');
        c.put_u32(9);
        c.put_u8(0);
        c.put_u64(0x100);
        c.put_u64(0x180);
        c.put_i64(1_000_000);
        assert_eq!(
            plain(&c),
            Ok(StreamPart::Commit {
                xid: 9,
                commit: Commit {
                    flags: 0,
                    commit_lsn: 0x100,
                    end_lsn: 0x180,
                    commit_time_us: PG_EPOCH_OFFSET_US + 1_000_000
                }
            })
        );
        assert_eq!(
            plain(b"A\0\0\0\x09\0\0\0\x0a"),
            Ok(StreamPart::Abort { xid: 9, subxid: 10 })
        );
        // Every change inside a block carries its (sub)transaction; taken out, it is protocol 1's message.
        for (v1, _) in samples() {
            let tag = v1[0];
            if matches!(tag, b'B' | b'C' | b'O') {
                continue;
            }
            let mut v2 = BytesMut::new();
            v2.put_u8(tag);
            v2.put_u32(77);
            v2.put_slice(&v1[1..]);
            let Ok(StreamPart::Change { xid, tag: t, body }) = inside(&v2) else {
                panic!("{tag}");
            };
            assert_eq!((xid, t, &body[..]), (77, tag, &v1[1..]));
            assert_eq!(plain(&v1), Ok(StreamPart::Plain));
        }
        // The origin of a streamed transaction comes in its first block, without an xid.
        assert!(matches!(
            inside(b"O\0\0\0\0\0\0\0\0x\0"),
            Ok(StreamPart::Change {
                xid: 0,
                tag: b'O',
                ..
            })
        ));
        // Framing out of place, truncated, trailing bytes or unknown: errors.
        for bad in [
            &b"E"[..],
            b"S\0\0\0\x01",
            b"S\0\0\0\x01\x02",
            b"S\0\0\0\x01\x01\0",
            b"A\0\0\0\x09\0\0\0",
            b"c\0\0\0\x09\0",
        ] {
            assert!(plain(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &b"S\0\0\0\x01\x01"[..],
            b"B",
            b"C",
            b"c",
            b"A",
            b"Zab",
            b"I\0\0",
            b"",
        ] {
            assert!(inside(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn huge_lengths_do_not_allocate_or_panic() {
        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_u32(u32::MAX);
        b.put_u8(0);
        assert!(decode(b.freeze()).is_err());
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b't');
        b.put_i32(i32::MAX);
        assert!(decode(b.freeze()).is_err());
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(-5);
        assert!(decode(b.freeze()).is_err());
    }

    /// Random bytes and random mutations of valid messages: errors allowed, panics not.
    #[test]
    fn fuzz_garbage_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let samples = samples();
        let tags = b"BCORYIUDTMNKOntubSEcA";
        for _ in 0..200_000 {
            let r = rnd();
            let bytes: Vec<u8> = if r % 2 == 0 {
                let len = (rnd() % 64) as usize;
                let mut v: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                if let Some(first) = v.first_mut() {
                    *first = tags[(rnd() % tags.len() as u64) as usize];
                }
                v
            } else {
                let (b, _) = &samples[(rnd() % samples.len() as u64) as usize];
                let mut v = b.to_vec();
                for _ in 0..=(rnd() % 4) {
                    let i = (rnd() % v.len() as u64) as usize;
                    v[i] = rnd() as u8;
                }
                v
            };
            let bytes = Bytes::from(bytes);
            let _ = stream_part(&bytes, r % 3 == 0);
            let _ = decode(bytes);
        }
    }
}

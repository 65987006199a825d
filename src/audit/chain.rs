//! Tamper evidence: a hash chain per organization (and source) in commit order, and signed checkpoints.
//!
//! Each item's `chain_hash` is SHA-256 over a versioned, canonical encoding of its stored fields and the
//! previous item's hash in the same chain. It is deterministic, so a replay after a crash writes identical
//! hashes. Platform-wide items (organization '') form the platform chain of their source, which every
//! organization's verification covers too. A checkpoint states, signed with Ed25519, "this chain held
//! `chain_seq` items and ended at `head_hash` at this position"; copies kept outside the operator's reach are
//! what make a rewrite of both the store and the chain detectable. Everything here is pure.

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::audit::attribution::seal::{hex, unhex};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The hash before a chain's first item.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the canonical encoding; a new encoding gets a new number and both stay verifiable.
pub const ENCODING: &str = "waltrail-item-v1";

/// An item's stored fields, as text and numbers exactly as stored: the encoding reads them in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub id: String,
    pub event_id: String,
    pub source_id: String,
    pub occurred_at_us: i64,
    pub commit_lsn: u64,
    pub xid: u32,
    pub seq: u32,
    pub action: String,
    pub source: String,
    pub principal_id: String,
    pub principal_type: String,
    pub display_name: String,
    pub actor_email: String,
    pub on_behalf_of_id: String,
    pub on_behalf_of_display: String,
    pub auth_method: String,
    pub key_id: String,
    pub session_id: String,
    pub request_id: String,
    pub run_id: String,
    pub client_ip: String,
    pub user_agent: String,
    pub organization_id: String,
    pub project_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub resource_display: String,
    pub changed_fields: Vec<String>,
    pub diff: String,
    pub table_name: String,
    pub summary: String,
    pub actor_source: String,
    pub context_status: String,
    pub platform_wide: u8,
}

impl Record {
    /// SHA-256 of the canonical encoding (see [`RecordRef::content_hash`]).
    pub fn content_hash(&self) -> [u8; 32] {
        self.as_ref().content_hash()
    }

    pub fn as_ref(&self) -> RecordRef<'_> {
        record_ref!(self, &self.id, &self.event_id)
    }
}

/// A [`RecordRef`] of any struct with the item's stored fields by their names (the exported [`Record`],
/// the stored row): the fields the canonical encoding covers are listed once, here, so no holder of
/// them can leave one out.
macro_rules! record_ref {
    ($s:expr, $id:expr, $event_id:expr) => {
        $crate::audit::chain::RecordRef {
            id: $id,
            event_id: $event_id,
            source_id: &$s.source_id,
            occurred_at_us: $s.occurred_at_us,
            commit_lsn: $s.commit_lsn,
            xid: $s.xid,
            seq: $s.seq,
            middle: [
                &$s.action,
                &$s.source,
                &$s.principal_id,
                &$s.principal_type,
                &$s.display_name,
                &$s.actor_email,
                &$s.on_behalf_of_id,
                &$s.on_behalf_of_display,
                &$s.auth_method,
                &$s.key_id,
                &$s.session_id,
                &$s.request_id,
                &$s.run_id,
                &$s.client_ip,
                &$s.user_agent,
                &$s.organization_id,
                &$s.project_id,
                &$s.resource_type,
                &$s.resource_id,
                &$s.resource_display,
            ],
            changed_fields: &$s.changed_fields,
            tail: [
                &$s.diff,
                &$s.table_name,
                &$s.summary,
                &$s.actor_source,
                &$s.context_status,
            ],
            platform_wide: $s.platform_wide,
        }
    };
}
pub(crate) use record_ref;

/// A record's fields borrowed, in encoding order: what is hashed for every stored item, without copying it.
pub struct RecordRef<'a> {
    pub id: &'a str,
    pub event_id: &'a str,
    pub source_id: &'a str,
    pub occurred_at_us: i64,
    pub commit_lsn: u64,
    pub xid: u32,
    pub seq: u32,
    /// action, source, principal_id, principal_type, display_name, actor_email, on_behalf_of_id,
    /// on_behalf_of_display, auth_method, key_id, session_id, request_id, run_id, client_ip, user_agent,
    /// organization_id, project_id, resource_type, resource_id, resource_display.
    pub middle: [&'a str; 20],
    pub changed_fields: &'a [String],
    /// diff, table_name, summary, actor_source, context_status.
    pub tail: [&'a str; 5],
    pub platform_wide: u8,
}

impl RecordRef<'_> {
    /// The fields owned, as exported (the inverse of [`Record::as_ref`]).
    pub fn to_record(&self) -> Record {
        let [action, source, principal_id, principal_type, display_name, actor_email, on_behalf_of_id, on_behalf_of_display, auth_method, key_id, session_id, request_id, run_id, client_ip, user_agent, organization_id, project_id, resource_type, resource_id, resource_display] =
            self.middle.map(str::to_owned);
        let [diff, table_name, summary, actor_source, context_status] =
            self.tail.map(str::to_owned);
        Record {
            id: self.id.to_owned(),
            event_id: self.event_id.to_owned(),
            source_id: self.source_id.to_owned(),
            occurred_at_us: self.occurred_at_us,
            commit_lsn: self.commit_lsn,
            xid: self.xid,
            seq: self.seq,
            action,
            source,
            principal_id,
            principal_type,
            display_name,
            actor_email,
            on_behalf_of_id,
            on_behalf_of_display,
            auth_method,
            key_id,
            session_id,
            request_id,
            run_id,
            client_ip,
            user_agent,
            organization_id,
            project_id,
            resource_type,
            resource_id,
            resource_display,
            changed_fields: self.changed_fields.to_vec(),
            diff,
            table_name,
            summary,
            actor_source,
            context_status,
            platform_wide: self.platform_wide,
        }
    }

    /// SHA-256 of the canonical encoding `waltrail-item-v1`: every field length-prefixed (u32
    /// little-endian), in order; numbers in decimal; the changed fields preceded by their count.
    pub fn content_hash(&self) -> [u8; 32] {
        // The encoding is written into one reused buffer and hashed in one call: feeding the digest
        // field by field (some sixty small updates per item) cost more than the hashing itself.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            self.encode_into(&mut buf);
            let d = ring::digest::digest(&ring::digest::SHA256, &buf);
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            // A huge item must not keep its buffer's memory for the thread's life.
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
            out
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut field = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        let mut num = [0u8; 20];
        field(ENCODING.as_bytes());
        field(self.id.as_bytes());
        field(self.event_id.as_bytes());
        field(self.source_id.as_bytes());
        field(decimal_i64(self.occurred_at_us, &mut num));
        field(decimal(self.commit_lsn, &mut num));
        field(decimal(self.xid as u64, &mut num));
        field(decimal(self.seq as u64, &mut num));
        for s in self.middle {
            field(s.as_bytes());
        }
        field(decimal(self.changed_fields.len() as u64, &mut num));
        for f in self.changed_fields {
            field(f.as_bytes());
        }
        for s in self.tail {
            field(s.as_bytes());
        }
        field(&[self.platform_wide]);
    }
}

/// `n` in decimal, written into `buf` (no allocation per field of every item).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn decimal_i64(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    if n >= 0 {
        return decimal(n as u64, buf);
    }
    // i64::MIN's magnitude fits a u64; one more byte for the sign is within 20.
    let len = decimal(n.unsigned_abs(), buf).len();
    let start = buf.len() - len - 1;
    buf[start] = b'-';
    &buf[start..]
}

/// The chain hash of an item: SHA-256("waltrail-chain-v1" || previous hash || content hash), as hex.
pub fn link(prev_hex: &str, content: &[u8; 32]) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(b"waltrail-chain-v1");
    h.update(prev_hex.as_bytes());
    h.update(content);
    hex(h.finish().as_ref())
}

/// An item's place in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ChainFields {
    /// 1 for a chain's first item.
    pub chain_seq: u64,
    pub chain_prev: String,
    pub chain_hash: String,
}

/// The head of one chain: where it ends, and what its last checkpoint covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    /// Chain position and commit time of the last checkpoint taken (0 / 0 before any).
    pub checkpointed_seq: u64,
    pub checkpointed_time_us: i64,
    /// The newest commit time among the chain's items linked (None: no item yet).
    pub newest_us: Option<i64>,
    /// The chain position from which each of its days' first items has been signed as an opening without
    /// a break (0: not known; the next item then starts it).
    pub signed_from: u64,
    /// The last checkpoint stored before a start, as stored: its position, head hash, the `every_items` it
    /// was signed with (0: format 1) and its commit position — what the start holds the stored chain to.
    pub stored_checkpoint: Option<(u64, String, u64, u64)>,
    /// What reading the head back found against its checkpoints (none verifying, or the item at the last
    /// one's position not the one it signed), said as [`Head::doubt`] says it.
    pub read_doubt: Option<String>,
    /// The stored item at the head: its commit position, id and commit time (None: none stored, or not
    /// read), so that a start can sign the head as it is.
    pub last_item: Option<(u64, String, i64)>,
}

impl Head {
    /// Why the stored chain does not look like what capture signed, if it does not: items after the last
    /// checkpoint's position deleted (the checkpoint is past the last item), or checkpoints due since it
    /// missing (deleted, perhaps after the items they covered were altered and linked again). Linking and
    /// signing on from such a head would vouch for the altered store.
    /// `every_now`: this start's `checkpoint_every_items` (runs between may have used it: with a larger one
    /// a checkpoint is due later, which is no deletion).
    pub fn doubt(&self, every_now: u64) -> Option<String> {
        if let Some(d) = &self.read_doubt {
            return Some(d.clone());
        }
        let (seq, _, stored_every, _) = self.stored_checkpoint.as_ref()?;
        let every = &(if *stored_every == 0 {
            0
        } else {
            (*stored_every).max(every_now)
        });
        if *seq > self.seq {
            return Some(format!(
                "its last checkpoint covers position {seq}, but its items end at {}: items were deleted",
                self.seq
            ));
        }
        let due = (seq / every.max(&1) + 1).saturating_mul(*every);
        (*every > 0 && self.seq >= due).then(|| {
            format!(
                "its items reach position {}, but its last checkpoint is at {seq}, while one was due by {due} (every {every} items): checkpoints were deleted",
                self.seq
            )
        })
    }

    /// The commit position of the last checkpoint stored before a start (0: none).
    pub fn stored_checkpoint_lsn(&self) -> u64 {
        self.stored_checkpoint.as_ref().map_or(0, |c| c.3)
    }

    /// Go on after a doubt accepted: from the last checkpoint when the items end before it (positions it
    /// covers are never linked twice; verification keeps naming the missing ones), with openings signed
    /// from here on.
    pub fn accept_doubt(&mut self) {
        self.read_doubt = None;
        if let Some((seq, hash, _, _)) = &self.stored_checkpoint {
            if *seq > self.seq {
                self.seq = *seq;
                self.hash = hash.clone();
                self.checkpointed_seq = *seq;
            }
        }
        self.signed_from = 0;
    }
}

impl Default for Head {
    fn default() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
            checkpointed_seq: 0,
            checkpointed_time_us: 0,
            newest_us: None,
            signed_from: 0,
            stored_checkpoint: None,
            read_doubt: None,
            last_item: None,
        }
    }
}

/// A signed statement of a chain's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub source_id: String,
    pub organization_id: String,
    /// Items in the chain up to and including the last one covered.
    pub chain_seq: u64,
    pub head_hash: String,
    /// The last covered item: its commit position and id.
    pub commit_lsn: u64,
    pub item_id: String,
    /// Its commit time (not a wall clock: a replay signs the very same checkpoint).
    pub commit_time_us: i64,
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::message`], hex.
    pub signature: String,
    /// 1: written before openings existed (no `opens_after_us`); 2: every checkpoint since. Signed, so a
    /// chain holding a format-2 checkpoint is known to open each day with a signed opening.
    #[serde(default = "format_v1")]
    pub format: u8,
    /// An opening: the checkpoint of a chain's first item of a (UTC) day, saying when the item before it
    /// was committed. Verification of a range starting at a day needs its first item to be opened by an
    /// item older than the range, or the items before it (and their checkpoints) were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_after_us: Option<i64>,
    /// Format 2: the chain position from which, up to this checkpoint, every day's first item was signed
    /// as an opening (signing began there, or began again after a while without a key). Verification asks
    /// an opening of a range's first item only inside such a span, so items linked while checkpoints were
    /// off never read as a deletion.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signed_from: u64,
    /// Format 2: `integrity.checkpoint_every_items` of the process that signed it, so the position by
    /// which the next checkpoint was due is known (a start finding none there was robbed of checkpoints).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub every_items: u64,
    /// Format 2: the number of the source's last roster when it was signed (0: none yet), so that rosters
    /// cut from the sequence's tail show: a signed checkpoint names one the store lacks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub roster_seq: u64,
}

fn format_v1() -> u8 {
    1
}

/// The format checkpoints are signed in now.
pub const CHECKPOINT_FORMAT: u8 = 2;

impl Checkpoint {
    /// Whether two checkpoints state the same of the same chain (whatever key signed them, in whatever
    /// format): a replay after a key rotation signs again what a copy already holds.
    pub fn same_statement(&self, other: &Checkpoint) -> bool {
        (
            &self.source_id,
            &self.organization_id,
            self.chain_seq,
            &self.head_hash,
            self.commit_lsn,
            &self.item_id,
            self.commit_time_us,
        ) == (
            &other.source_id,
            &other.organization_id,
            other.chain_seq,
            &other.head_hash,
            other.commit_lsn,
            &other.item_id,
            other.commit_time_us,
        )
    }

    pub fn message(&self) -> Vec<u8> {
        if self.format < 2 {
            return format!(
                "waltrail-checkpoint-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
                self.source_id,
                self.organization_id,
                self.chain_seq,
                self.head_hash,
                self.commit_lsn,
                self.item_id,
                self.commit_time_us
            )
            .into_bytes();
        }
        // Strings are length-prefixed: an identifier from the platform's rows may hold a line break, which
        // must not let one checkpoint's fields read as another's.
        let s = |v: &str| format!("{}:{v}", v.len());
        format!(
            "waltrail-checkpoint-v{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.format,
            s(&self.source_id),
            s(&self.organization_id),
            self.chain_seq,
            s(&self.head_hash),
            self.commit_lsn,
            s(&self.item_id),
            self.commit_time_us,
            self.opens_after_us
                .map_or(String::from("-"), |t| t.to_string()),
            self.signed_from,
            self.every_items,
            self.roster_seq
        )
        .into_bytes()
    }
}

/// One chain in a roster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RosterEntry {
    /// The organization ('' for the platform chain).
    pub chain: String,
    pub seq: u64,
    /// The newest commit time of its items (i64::MIN: not known).
    pub newest_us: i64,
}

/// A source's signed list of its chains as of a transaction: once per day of commit time. Signed over a
/// digest of its entries, so that its header alone (small) can be checked for every day of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    pub source_id: String,
    pub roster_seq: u64,
    pub commit_lsn: u64,
    pub commit_time_us: i64,
    pub chains: Vec<RosterEntry>,
    /// SHA-256 of the entries' canonical JSON, hex.
    pub chains_sha256: String,
    /// Every chain of the source (the day's first), or only those begun since the last roster.
    pub full: bool,
    pub key_id: String,
    pub signature: String,
}

impl Roster {
    pub fn new(
        source_id: &str,
        roster_seq: u64,
        (commit_lsn, commit_time_us): (u64, i64),
        chains: Vec<RosterEntry>,
    ) -> Roster {
        let chains_sha256 = Roster::digest(&Roster::chains_json(&chains));
        Roster {
            source_id: source_id.to_owned(),
            roster_seq,
            commit_lsn,
            commit_time_us,
            chains,
            chains_sha256,
            full: true,
            key_id: String::new(),
            signature: String::new(),
        }
    }

    /// The entries as stored: a JSON array, in chain order.
    pub fn chains_json(chains: &[RosterEntry]) -> String {
        serde_json::to_string(chains).unwrap_or_default()
    }

    pub fn digest(json: &str) -> String {
        hex(&Sha256::digest(json.as_bytes()))
    }

    pub fn message(&self) -> Vec<u8> {
        format!(
            "waltrail-roster-v1\n{}:{}\n{}\n{}\n{}\n{}\n{}",
            self.source_id.len(),
            self.source_id,
            self.roster_seq,
            self.commit_lsn,
            self.commit_time_us,
            self.chains_sha256,
            if self.full { "full" } else { "new" }
        )
        .into_bytes()
    }

    fn sign(&mut self, key: &SigningKey) {
        self.key_id = key.key_id.clone();
        self.signature = hex(key.pair.sign(&self.message()).as_ref());
    }

    /// Whether a trusted checkpoint key signed this header.
    pub fn signed_by(&self, keys: &[PublicKey]) -> bool {
        keys.iter().any(|k| {
            !k.exports_only
                && k.key_id == self.key_id
                && unhex(&self.signature).is_some_and(|sig| {
                    UnparsedPublicKey::new(&ED25519, &k.bytes)
                        .verify(&self.message(), &sig)
                        .is_ok()
                })
        })
    }
}

/// The checkpoint signing key (an Ed25519 seed) and its id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pub key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

impl SigningKey {
    /// From the 64 hex digits a key file holds (`waltrail keygen`, WALTRAIL_SIGNING_KEY).
    pub fn from_hex(seed: &str) -> Result<SigningKey, String> {
        let seed = unhex(seed.trim()).ok_or("a signing key is 64 hex digits")?;
        SigningKey::from_seed(&seed)
    }

    /// From a 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| "an Ed25519 signing key is a 32-byte seed".to_owned())?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, key_id })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id.clone(),
            bytes: self.pair.public_key().as_ref().to_vec(),
            exports_only: false,
        }
    }

    pub fn sign(&self, c: &mut Checkpoint) {
        c.key_id = self.key_id.clone();
        c.signature = hex(self.pair.sign(&c.message()).as_ref());
    }
}

/// A public key checkpoints (and exports) are verified with; the id is derived from the key, so it cannot
/// be mislabelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    pub bytes: Vec<u8>,
    /// The key of `integrity.export_signing_key_file`: it verifies exports, never a checkpoint (an API
    /// replica holding it must not be able to sign the trail's checkpoints).
    pub exports_only: bool,
}

impl PublicKey {
    /// `ed25519:<64 hex digits>` (the form `waltrail keys` prints), or the bare hex; `export:ed25519:…` for
    /// a key that verifies exports only.
    pub fn parse(s: &str) -> Result<PublicKey, String> {
        // `waltrail keys` prints `ed25519:<hex>  # key id …`: what follows a '#' is a comment.
        let s = s.split('#').next().unwrap_or("").trim();
        let (exports_only, rest) = match s.strip_prefix("export:") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let h = rest.strip_prefix("ed25519:").unwrap_or(rest);
        let bytes = unhex(h).filter(|b| b.len() == 32).ok_or_else(|| {
            format!("public key {s:?} must be ed25519:<64 hex digits> (or export:ed25519:…)")
        })?;
        Ok(PublicKey {
            key_id: key_id(&bytes),
            bytes,
            exports_only,
        })
    }

    pub fn to_text(&self) -> String {
        let role = if self.exports_only { "export:" } else { "" };
        format!("{role}ed25519:{}", hex(&self.bytes))
    }

    pub fn verifies(&self, c: &Checkpoint) -> bool {
        !self.exports_only
            && c.key_id == self.key_id
            && unhex(&c.signature).is_some_and(|sig| {
                UnparsedPublicKey::new(&ED25519, &self.bytes)
                    .verify(&c.message(), &sig)
                    .is_ok()
            })
    }
}

/// The configured signing key (if any) and every public key that verifies: the current key's, the export
/// key's (exports only) and `integrity.trusted_keys` (keys used before a rotation).
pub fn configured_keys(
    cfg: &crate::config::Config,
) -> Result<(Option<SigningKey>, Vec<PublicKey>), String> {
    let signing = match &cfg.integrity.signing_key {
        Some(k) => Some(SigningKey::from_hex(&k.0)?),
        None => None,
    };
    let mut keys: Vec<PublicKey> = signing.iter().map(SigningKey::public_key).collect();
    let export = export_key(cfg)?.filter(|_| cfg.integrity.export_signing_key.is_some());
    let trusted = cfg
        .integrity
        .trusted_keys
        .iter()
        .map(|t| PublicKey::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let export_public = export.map(|k| PublicKey {
        exports_only: true,
        ..k.public_key()
    });
    for k in export_public.into_iter().chain(trusted) {
        // One key, one role: a key that signs checkpoints keeps that role whatever else lists it.
        if !keys.iter().any(|have| have.key_id == k.key_id) {
            keys.push(k);
        }
    }
    Ok((signing, keys))
}

/// The key that signs exports: `integrity.export_signing_key_file`'s, else the checkpoints' (None: exports
/// go out unsigned).
pub fn export_key(cfg: &crate::config::Config) -> Result<Option<SigningKey>, String> {
    match (
        &cfg.integrity.export_signing_key,
        &cfg.integrity.signing_key,
    ) {
        (Some(k), _) | (None, Some(k)) => SigningKey::from_hex(&k.0).map(Some),
        (None, None) => Ok(None),
    }
}

/// The checkpoints of `source_id` an `integrity.checkpoint_file` holds, in file order; lines that are not
/// whole checkpoints (a write cut short) are passed over. None when the file cannot be read.
pub fn checkpoints_in_file(path: &str, source_id: &str) -> Option<Vec<Checkpoint>> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).ok()?;
    Some(
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<ExportLine>(&l).ok()?.checkpoint)
            .filter(|c| c.source_id == source_id)
            .collect(),
    )
}

/// Append checkpoint lines to `integrity.checkpoint_file`. A file whose last line was torn (a write cut
/// short) gets a line break first, so the new lines stay whole and the fragment stays a line of its own.
pub fn append_checkpoint_lines(path: &std::path::Path, lines: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut torn = false;
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        torn = last[0] != b'\n';
    }
    let text = if torn {
        format!("\n{lines}")
    } else {
        lines.to_owned()
    };
    f.write_all(text.as_bytes())
}

/// Whether checkpoints can be appended to `integrity.checkpoint_file` (opened, created when missing, and
/// nothing written): the copy that defeats a rewrite of the store must not silently stay empty.
pub fn checkpoint_file_writable(path: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "integrity.checkpoint_file {path:?} cannot be appended to ({e}): create its directory and let \
                 waltrail write there, or unset it"
            )
        })
}

/// A new signing key's seed, as the 64 hex digits `integrity.signing_key_file` holds.
pub fn new_seed_hex() -> Result<String, String> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "the system's random source failed".to_owned())?;
    Ok(hex(&seed))
}

/// One line of an NDJSON export, as the offline verifier reads it: an item (its stored fields and chain
/// fields), the export's description, or a checkpoint.
/// Read in one pass (no `flatten`, which would buffer every field): the record, its chain fields, and
/// what a reader sees beside them, which must say what the record says.
#[derive(Debug, serde::Deserialize)]
pub struct ExportLine {
    pub record: Option<Record>,
    pub chain: Option<ChainFields>,
    pub checkpoint: Option<Checkpoint>,
    pub roster: Option<RosterClaim>,
    pub export: Option<ExportInfo>,
    pub id: Option<String>,
    pub event_id: Option<String>,
    pub action: Option<String>,
    pub source: Option<String>,
    pub principal_id: Option<String>,
    pub principal_type: Option<String>,
    pub display_name: Option<String>,
    pub actor_email: Option<String>,
    pub organization_id: Option<String>,
    pub project_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_display: Option<String>,
    pub summary: Option<String>,
    pub client_ip: Option<String>,
    pub changed_fields: Option<Vec<String>>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ExportInfo {
    /// Every item of the organization in the retention window (no filter): continuity can be checked.
    pub complete: bool,
    /// Whether the platform chain is whole in it too: false when that chain also holds items of no
    /// organization (an empty organization column), which no organization's export carries. Absent in
    /// exports of earlier versions: as `complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_complete: Option<bool>,
    /// The server's signature over what the export is (its organization, the request's filters, the
    /// flags above) and every line before this one: without it nothing says which chains, or which part
    /// of a chain, the export was meant to hold, so whole chains or a chain's oldest items could be
    /// removed unseen. Absent when the server had no signing key (and in exports of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<ExportSeal>,
}

/// What a signed export's last line vouches for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportSeal {
    pub organization_id: String,
    /// The request's query string as received: its filters.
    pub query: String,
    pub produced_at_us: i64,
    /// The export holds every item of the organization committed at or after this time that its filters
    /// select (the retention window's start, or a later `since`).
    pub since_us: i64,
    /// How many lines precede the last one, and the SHA-256 (hex) of them, each followed by `\n`.
    pub lines: u64,
    pub sha256: String,
    pub key_id: String,
    pub signature: String,
}

/// The running digest of an export's lines (each followed by `\n`), as the server sends them and as the
/// verifier reads them back.
pub struct ExportDigest {
    ctx: ring::digest::Context,
    lines: u64,
}

impl Default for ExportDigest {
    fn default() -> Self {
        ExportDigest {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            lines: 0,
        }
    }
}

impl ExportDigest {
    /// One line, without its line end.
    pub fn add(&mut self, line: &str) {
        self.ctx.update(line.as_bytes());
        self.ctx.update(b"\n");
        self.lines += 1;
    }

    /// (lines, hex SHA-256) so far.
    pub fn state(&self) -> (u64, String) {
        (self.lines, hex(self.ctx.clone().finish().as_ref()))
    }
}

impl ExportInfo {
    /// What the signature covers: every claim of the last line, as one JSON array (strings escaped, so no
    /// field can run into the next).
    fn seal_message(&self, seal: &ExportSeal) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([
            "waltrail-export-v1",
            seal.organization_id,
            seal.query,
            self.complete,
            self.platform_complete,
            seal.produced_at_us,
            seal.since_us,
            seal.lines,
            seal.sha256,
        ]))
        .unwrap_or_default()
    }

    /// Sign the export whose lines so far `digest` holds.
    pub fn seal(
        &mut self,
        key: &SigningKey,
        organization_id: &str,
        query: &str,
        (produced_at_us, since_us): (i64, i64),
        digest: &ExportDigest,
    ) {
        let (lines, sha256) = digest.state();
        let mut seal = ExportSeal {
            organization_id: organization_id.to_owned(),
            query: query.to_owned(),
            produced_at_us,
            since_us,
            lines,
            sha256,
            key_id: key.key_id.clone(),
            signature: String::new(),
        };
        seal.signature = hex(key.pair.sign(&self.seal_message(&seal)).as_ref());
        self.seal = Some(seal);
    }

    /// Whether the seal holds for the lines `digest` read, with one of `keys`: the first reason it does
    /// not, said plainly.
    /// Ok(whether the key that signed it verifies exports only).
    fn check_seal(&self, digest: &ExportDigest, keys: &[PublicKey]) -> Result<bool, String> {
        let Some(seal) = &self.seal else {
            return Err("the export is not signed (the server that wrote it had no signing key, or the \
                 signature was stripped): which chains and which part of them it holds cannot be proven"
                .to_owned());
        };
        let Some(key) = keys.iter().find(|k| k.key_id == seal.key_id) else {
            return Err(format!(
                "the export is signed by key {}, which is not among the given public keys",
                seal.key_id
            ));
        };
        let signed = unhex(&seal.signature).is_some_and(|sig| {
            UnparsedPublicKey::new(&ED25519, &key.bytes)
                .verify(&self.seal_message(seal), &sig)
                .is_ok()
        });
        if !signed {
            return Err(format!(
                "the export's last line does not verify with key {}: what it says the export is (organization, \
                 filters, completeness, lines) was altered",
                seal.key_id
            ));
        }
        let (lines, sha256) = digest.state();
        if (lines, sha256.as_str()) != (seal.lines, seal.sha256.as_str()) {
            return Err(format!(
                "the export's lines are not those the server signed ({} lines signed, {lines} here): lines were \
                 removed, added, reordered or altered",
                seal.lines
            ));
        }
        Ok(key.exports_only)
    }
}

/// Which chains a set of links holds whole (a missing position is then a deletion, a checkpoint past the
/// last item a cut tail); a chain not whole is checked only where its items are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completeness {
    pub organizations: bool,
    pub platform: bool,
    /// The whole chains hold every item committed at or after this time (retention may have removed older
    /// ones): a checkpoint committed since then covers items that must be there, below the first one
    /// too, and an older one that no item reaches says nothing.
    pub since_us: Option<i64>,
}

impl Completeness {
    pub const WHOLE: Completeness = Completeness {
        organizations: true,
        platform: true,
        since_us: None,
    };
}

/// What an export's verification found.
#[derive(Debug, Default)]
pub struct ExportVerdict {
    pub reports: Vec<ChainReport>,
    /// The seal that held: the export is exactly what the server sent, for this organization and these
    /// filters.
    pub sealed: Option<ExportSeal>,
    /// Why the export is not proven to be what the server sent (not signed): no failure found, no proof.
    pub unsigned: Option<String>,
    /// What is wrong with the export as a whole (its last line, its lines against the seal, a line that
    /// shows other than its record), beside what each chain's report says.
    pub failure: Option<String>,
    /// Sealed with an export-only key: each chain is proven up to its last checkpoint only (the rest is
    /// counted in its report's `unjudged`).
    pub exports_only: bool,
}

/// Verify an NDJSON export offline, with the given public keys.
pub fn verify_export(
    lines: impl Iterator<Item = std::io::Result<String>>,
    keys: &[PublicKey],
) -> Result<ExportVerdict, String> {
    let mut digest = ExportDigest::default();
    let mut sealed = None;
    let mut unsigned = None;
    let mut exports_only = false;
    let mut links = Vec::new();
    let mut checkpoints = Vec::new();
    let mut complete = Completeness {
        organizations: false,
        platform: false,
        since_us: None,
    };
    let mut mismatches = Vec::new();
    let mut claims: Vec<RosterClaim> = Vec::new();
    // The export's last line says what it covers; an export without it, or with lines after it (blank
    // ones too), was cut or spliced.
    let mut trailer_at: Option<usize> = None;
    let mut after_trailer: Option<usize> = None;
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| format!("reading the export: {e}"))?;
        if trailer_at.is_some() {
            after_trailer.get_or_insert(n + 1);
            continue;
        }
        if line.trim().is_empty() {
            digest.add(&line);
            continue;
        }
        // One pass per line: the record, its chain fields and what is shown beside them.
        let l: ExportLine = serde_json::from_str(&line)
            .map_err(|e| format!("line {}: not an export line waltrail wrote: {e}", n + 1))?;
        let last_line =
            l.record.is_none() && l.chain.is_none() && l.checkpoint.is_none() && l.roster.is_none();
        match (&l.export, last_line) {
            (Some(_), true) => {}
            (Some(_), false) => {
                // The signature covers every line but the last: a line that is both would escape it.
                mismatches.push(format!(
                    "line {}: an item or checkpoint carrying the export's last line: not a line waltrail wrote",
                    n + 1
                ));
                digest.add(&line);
            }
            (None, _) => digest.add(&line),
        }
        match (&l.record, &l.chain, &l.checkpoint, &l.export) {
            (Some(r), Some(c), _, _) => {
                // What a reader sees beside the record must be the record: a line whose displayed fields
                // were changed while its record was left alone is altered too.
                if let Some(field) = displayed_mismatch(&l, r) {
                    mismatches.push(format!(
                        "item {} (line {}): its {field} differs from its verified record: the line was altered",
                        r.id,
                        n + 1
                    ));
                }
                links.push(Link::of(r, c.clone()))
            }
            (Some(r), None, _, _) => {
                return Err(format!(
                    "line {}: item {} carries no chain fields (an item stored before the chain, or a CSV export)",
                    n + 1,
                    r.id
                ))
            }
            (_, _, Some(c), _) => checkpoints.push(c.clone()),
            (None, None, None, None) if l.roster.is_some() => claims.extend(l.roster.clone()),
            (_, _, _, Some(e)) if last_line => {
                trailer_at = Some(n + 1);
                let checked = e.check_seal(&digest, keys);
                exports_only = checked == Ok(true);
                complete = Completeness {
                    organizations: e.complete,
                    platform: e.platform_complete.unwrap_or(e.complete),
                    // Only what a key that also signs checkpoints vouches for: an export-only key's holder
                    // could write any window.
                    since_us: e
                        .seal
                        .as_ref()
                        .filter(|_| checked == Ok(false))
                        .map(|s| s.since_us),
                };
                match checked {
                    Ok(_) => sealed = e.seal.clone(),
                    Err(why) if e.seal.is_none() => unsigned = Some(why),
                    Err(why) => mismatches.push(why),
                }
            }
            _ => {}
        }
    }
    let mut reports = verify(links, &checkpoints, keys, complete);
    // The rosters' claims the server read from the store, sealed with a checkpoint key (so `since_us` is
    // set): each chain the export holds whole must reach where they list it.
    if complete.since_us.is_some() {
        claims.retain(|c| {
            if c.chain.is_empty() {
                complete.platform
            } else {
                complete.organizations
            }
        });
        hold_to_claims(&claims, complete.since_us, "the export", &mut reports);
    }
    // Signed with an export-only key, the file is what an API replica wrote: its chains are proven only as
    // far as their checkpoints (signed with checkpoint keys) reach; what follows the last one could have
    // been written by whoever holds that key.
    if exports_only {
        for r in reports.iter_mut().filter(|r| r.failure.is_none()) {
            r.unjudged += r
                .last_seq
                .saturating_sub(r.verified_seq.max(r.first_seq.saturating_sub(1)));
        }
    }
    match (trailer_at, after_trailer) {
        (None, _) => mismatches.insert(
            0,
            "the export's last line (what it covers) is missing: the export was cut short or altered"
                .to_owned(),
        ),
        (Some(t), Some(a)) => mismatches.insert(
            0,
            format!("line {a} follows the export's last line (line {t}): lines were added to the export"),
        ),
        _ => {}
    }
    let failure = match mismatches.len() {
        0 => None,
        1 => mismatches.pop(),
        n => Some(format!("{} (and {} more)", mismatches[0], n - 1)),
    };
    Ok(ExportVerdict {
        reports,
        sealed,
        unsigned,
        failure,
        exports_only,
    })
}

/// The first displayed field of an export line that does not say what its record says.
fn displayed_mismatch(shown: &ExportLine, r: &Record) -> Option<&'static str> {
    let pairs: [(&'static str, &Option<String>, &str); 15] = [
        ("id", &shown.id, &r.id),
        ("event_id", &shown.event_id, &r.event_id),
        ("action", &shown.action, &r.action),
        ("source", &shown.source, &r.source),
        ("principal_id", &shown.principal_id, &r.principal_id),
        ("principal_type", &shown.principal_type, &r.principal_type),
        ("display_name", &shown.display_name, &r.display_name),
        ("actor_email", &shown.actor_email, &r.actor_email),
        (
            "organization_id",
            &shown.organization_id,
            &r.organization_id,
        ),
        ("project_id", &shown.project_id, &r.project_id),
        ("resource_type", &shown.resource_type, &r.resource_type),
        ("resource_id", &shown.resource_id, &r.resource_id),
        (
            "resource_display",
            &shown.resource_display,
            &r.resource_display,
        ),
        ("summary", &shown.summary, &r.summary),
        ("client_ip", &shown.client_ip, &r.client_ip),
    ];
    for (k, shown, v) in pairs {
        if shown.as_deref().is_some_and(|s| s != v) {
            return Some(k);
        }
    }
    if shown
        .changed_fields
        .as_ref()
        .is_some_and(|f| *f != r.changed_fields)
    {
        return Some("changed_fields");
    }
    None
}

fn key_id(public: &[u8]) -> String {
    hex(&Sha256::digest(public)[..8])
}

/// Assigns chain fields in commit order and decides when a chain is checkpointed.
#[derive(Debug)]
pub struct Chainer {
    source_id: String,
    heads: HashMap<String, Head>,
    key: Option<SigningKey>,
    every_items: u64,
    every_us: i64,
    /// Checkpoints taken while linking (a chain's first item of a day), handed out with the next ones due.
    pending: Vec<Checkpoint>,
    /// The source's last roster: its number and commit time (None: none yet).
    roster: Option<(u64, i64)>,
    /// Chains begun since the last roster: the next transaction's roster lists them.
    new_chains: Vec<String>,
    /// How long a chain whose newest item is older stays in full rosters (None: always): verification asks
    /// nothing of a chain whose items retention may have dropped, so listing it only grows the roster.
    roster_keep_us: Option<i64>,
}

/// A UTC day: retention drops whole days, and each chain opens every day with a signed checkpoint.
pub const DAY_US: i64 = 86_400_000_000;

impl Chainer {
    /// `heads`: each chain's head as of where capture resumes (read back from the store).
    pub fn new(
        source_id: String,
        heads: HashMap<String, Head>,
        key: Option<SigningKey>,
        every_items: u64,
        every_s: u64,
    ) -> Self {
        Chainer {
            source_id,
            heads,
            key,
            every_items: every_items.max(1),
            every_us: (every_s as i64).saturating_mul(1_000_000),
            pending: Vec::new(),
            roster: None,
            new_chains: Vec::new(),
            roster_keep_us: None,
        }
    }

    /// A chain's first item, and each item of a (UTC) day later than every earlier item's, is checkpointed
    /// as soon as it is linked (a replay links it again and signs the very same checkpoint). Without it the
    /// items a transaction's checkpoint covers along with it could be deleted from the chain's head with
    /// nothing signed saying they were there; and since retention drops whole days, the oldest day it keeps
    /// begins with a checkpoint inside the window, so its oldest items cannot go unseen either. That
    /// checkpoint is an opening: it says the newest commit time of the items before it, so a range's first
    /// item must be opened after items all older than the range, and deleting the range's oldest items
    /// *with* their checkpoints shows. (Newest, not the previous item's: after an item with an old commit
    /// time, a replication origin's, the next one's opening would otherwise excuse every item before it.)
    fn linked(&mut self, chain: &str, record: &RecordRef<'_>) {
        let Some(head) = self.heads.get_mut(chain) else {
            return;
        };
        let before = head.newest_us;
        head.newest_us =
            Some(before.map_or(record.occurred_at_us, |b| b.max(record.occurred_at_us)));
        let day = |t: i64| t.div_euclid(DAY_US);
        if before.is_some_and(|b| day(b) >= day(record.occurred_at_us)) {
            return;
        }
        let now = self.checkpoint(
            chain,
            (record.commit_lsn, record.id, record.occurred_at_us),
            true,
            before,
        );
        self.pending.extend(now);
    }

    /// Full rosters leave out chains whose newest item is older than retention keeps (plus a day).
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.roster_keep_us = Some((days as i64 + 1).saturating_mul(DAY_US));
        self
    }

    /// Where the source's rosters go on from (its last stored roster's number and commit time).
    pub fn with_roster(mut self, last: Option<(u64, i64)>) -> Self {
        self.roster = last;
        self
    }

    /// After a transaction: the source's roster, signed. A full one when its commit day is later than the
    /// last roster's (or there is none yet): every chain of the source with its position and newest commit
    /// time. Else, when the transaction began chains, one listing those. Each chain's own checkpoints
    /// cannot show that a whole chain (its items and checkpoints) was deleted; the rosters, a full one per
    /// source and day and a small one per new chain, can. `None` without a key.
    pub fn roster_due(&mut self, commit_lsn: u64, commit_time_us: i64) -> Option<Roster> {
        let new = std::mem::take(&mut self.new_chains);
        let key = self.key.as_ref()?;
        // A roster's time never goes back (a replication origin's old commit time): rosters are numbered in
        // their time's order, so a range holds a run of them without holes.
        let commit_time_us = self
            .roster
            .map_or(commit_time_us, |(_, t)| t.max(commit_time_us));
        let day = |t: i64| t.div_euclid(DAY_US);
        let full = self
            .roster
            .is_none_or(|(_, t)| day(t) < day(commit_time_us));
        if !full && new.is_empty() {
            return None;
        }
        let entry = |c: &String, h: &Head| RosterEntry {
            chain: c.clone(),
            seq: h.seq,
            newest_us: h.newest_us.unwrap_or(i64::MIN),
        };
        let keep_from = self
            .roster_keep_us
            .map_or(i64::MIN, |k| commit_time_us.saturating_sub(k));
        let mut chains: Vec<RosterEntry> = if full {
            self.heads
                .iter()
                .filter(|(_, h)| h.seq > 0 && h.newest_us.is_none_or(|t| t >= keep_from))
                .map(|(c, h)| entry(c, h))
                .collect()
        } else {
            new.iter()
                .filter_map(|c| self.heads.get(c).map(|h| entry(c, h)))
                .collect()
        };
        chains.sort_by(|a, b| a.chain.cmp(&b.chain));
        chains.dedup_by(|a, b| a.chain == b.chain);
        let seq = self.roster.map_or(1, |(s, _)| s + 1);
        let mut r = Roster::new(&self.source_id, seq, (commit_lsn, commit_time_us), chains);
        r.full = full;
        r.sign(key);
        self.roster = Some((seq, commit_time_us));
        Some(r)
    }

    /// Checkpoints taken while linking, not handed out yet.
    pub fn take_pending(&mut self) -> Vec<Checkpoint> {
        std::mem::take(&mut self.pending)
    }

    /// The chain an item belongs to: its organization, or '' for platform-wide items.
    pub fn chain_of(organization_id: &str, platform_wide: bool) -> &str {
        if platform_wide {
            ""
        } else {
            organization_id
        }
    }

    /// Link one item (in commit order) into its chain.
    pub fn link(&mut self, chain: &str, record: &Record) -> ChainFields {
        self.link_ref(chain, &record.as_ref())
    }

    pub fn link_ref(&mut self, chain: &str, record: &RecordRef<'_>) -> ChainFields {
        let head = match self.heads.get_mut(chain) {
            Some(h) => h,
            None => self.heads.entry(chain.to_owned()).or_default(),
        };
        if head.seq == 0 {
            // A new chain's checkpoint clock starts at its first item.
            head.checkpointed_time_us = record.occurred_at_us;
            self.new_chains.push(chain.to_owned());
        }
        if head.signed_from == 0 {
            head.signed_from = head.seq + 1;
        }
        let prev = std::mem::take(&mut head.hash);
        head.hash = link(&prev, &record.content_hash());
        // Never wraps to 0 (outside verification), whatever a stored head said.
        head.seq = head.seq.saturating_add(1);
        let fields = ChainFields {
            chain_seq: head.seq,
            chain_prev: prev,
            chain_hash: head.hash.clone(),
        };
        self.linked(chain, record);
        fields
    }

    /// Take an item stored before a restart as its chain's next link, exactly as stored: a replay never
    /// writes a second version of what is stored, so the chain goes on from the stored item's hash.
    /// Returns why the stored item does not follow the head (verification reports the same place), or
    /// `None` when it does.
    pub fn adopt(
        &mut self,
        chain: &str,
        record: &RecordRef<'_>,
        stored: &ChainFields,
    ) -> Option<String> {
        if stored.chain_seq == 0 {
            return Some(
                "stored without chain fields (the chain was off when it was stored); it stays outside the chain"
                    .to_owned(),
            );
        }
        let head = match self.heads.get_mut(chain) {
            Some(h) => h,
            None => self.heads.entry(chain.to_owned()).or_default(),
        };
        let problem = if stored.chain_seq != head.seq + 1 || stored.chain_prev != head.hash {
            Some(format!(
                "stored as link {} after {}, where the chain's head was link {} ending {}",
                stored.chain_seq, stored.chain_prev, head.seq, head.hash
            ))
        } else if stored.chain_hash != link(&stored.chain_prev, &record.content_hash()) {
            Some("its stored hash is not the hash of its stored content".to_owned())
        } else {
            None
        };
        if head.seq == 0 {
            head.checkpointed_time_us = record.occurred_at_us;
            self.new_chains.push(chain.to_owned());
        }
        if head.signed_from == 0 {
            head.signed_from = stored.chain_seq;
        }
        head.seq = stored.chain_seq;
        head.hash = stored.chain_hash.clone();
        self.linked(chain, record);
        problem
    }

    /// After a transaction's items are linked: the checkpoints due for the chains it touched (enough items
    /// or enough commit time since the last one). `None` without a signing key.
    pub fn checkpoints_due(
        &mut self,
        touched: &[(String, u64, String)],
        commit_time_us: i64,
    ) -> Vec<Checkpoint> {
        let mut out = self.take_pending();
        out.extend(
            touched
                .iter()
                .filter_map(|(chain, commit_lsn, item_id)| {
                    self.checkpoint(chain, (*commit_lsn, item_id, commit_time_us), false, None)
                })
                .collect::<Vec<_>>(),
        );
        out
    }

    /// Checkpoints, now, of the chains whose last checkpoint precedes `since_lsn` (where signing stopped)
    /// and whose stored items after it no checkpoint covers (signing resumed after a stretch with
    /// `integrity.signing = "off"`): a chain that gains nothing more (the platform chain holding only the
    /// record that signing stopped, or a tail left unsigned by a crash before it) would stay unproven.
    pub fn sign_heads_after(&mut self, since_lsn: u64) -> Vec<Checkpoint> {
        let due: Vec<(String, (u64, String, i64))> = self
            .heads
            .iter()
            .filter(|(_, h)| h.seq > h.checkpointed_seq && h.stored_checkpoint_lsn() < since_lsn)
            .filter_map(|(c, h)| h.last_item.clone().map(|i| (c.clone(), i)))
            .collect();
        due.into_iter()
            .filter_map(|(chain, (lsn, id, t))| self.checkpoint_now(&chain, lsn, &id, t))
            .collect()
    }

    /// A checkpoint of `chain` now, whatever the interval (None without a key, or nothing new to cover):
    /// after an item that must not be cut off the chain's tail unseen, such as a gap's record.
    pub fn checkpoint_now(
        &mut self,
        chain: &str,
        commit_lsn: u64,
        item_id: &str,
        commit_time_us: i64,
    ) -> Option<Checkpoint> {
        self.checkpoint(chain, (commit_lsn, item_id, commit_time_us), true, None)
    }

    /// `last`: the last item covered (commit position, id, commit time); `opens_after_us`: for an opening,
    /// when the item before it was committed.
    fn checkpoint(
        &mut self,
        chain: &str,
        (commit_lsn, item_id, commit_time_us): (u64, &str, i64),
        now: bool,
        opens_after_us: Option<i64>,
    ) -> Option<Checkpoint> {
        let key = self.key.as_ref()?;
        let head = self.heads.get_mut(chain)?;
        // Items: at each multiple of `every_items` the chain passes, so that a checkpoint taken out of turn
        // (a chain's first item, a gap) does not shift the ones after it.
        let every = self.every_items.max(1);
        // The interval changed since the chain's last stored checkpoint: one signed under this one at once,
        // so that a start later holds the items linked now to the interval they were linked under (raised
        // then lowered again, they were held to the lower one and refused).
        let interval_changed = head
            .stored_checkpoint
            .as_ref()
            .is_some_and(|c| c.2 != 0 && c.2 != every);
        let due = now
            || interval_changed
            || head.seq / every > head.checkpointed_seq / every
            || commit_time_us - head.checkpointed_time_us >= self.every_us;
        if !due || head.seq == head.checkpointed_seq {
            return None;
        }
        let mut c = Checkpoint {
            source_id: self.source_id.clone(),
            organization_id: chain.to_owned(),
            chain_seq: head.seq,
            head_hash: head.hash.clone(),
            commit_lsn,
            item_id: item_id.to_owned(),
            commit_time_us,
            key_id: String::new(),
            signature: String::new(),
            format: CHECKPOINT_FORMAT,
            opens_after_us,
            signed_from: head.signed_from.max(1).min(head.seq),
            every_items: every,
            roster_seq: self.roster.map_or(0, |(s, _)| s),
        };
        key.sign(&mut c);
        head.checkpointed_seq = head.seq;
        head.checkpointed_time_us = commit_time_us;
        if let Some(stored) = &mut head.stored_checkpoint {
            stored.2 = every;
        }
        Some(c)
    }
}

/// One item as the verifier sees it: its content hash and the chain fields it claims.
#[derive(Debug, Clone)]
pub struct Link {
    pub id: String,
    pub chain: String,
    pub content: [u8; 32],
    pub fields: ChainFields,
    /// Its commit time (covered by `content`): where a range starts matters for its first item.
    pub occurred_at_us: i64,
    /// Its commit position (covered by `content`).
    pub commit_lsn: u64,
    /// The record of checkpoint signing turned off (`integrity.signing = "off"`): what its source
    /// captured after it is proven by no checkpoint until one is signed again.
    pub signing_gap: bool,
}

impl Link {
    pub fn of(record: &Record, fields: ChainFields) -> Link {
        Link {
            id: record.id.clone(),
            chain: chain_key(
                &record.source_id,
                Chainer::chain_of(&record.organization_id, record.platform_wide != 0),
            ),
            content: record.content_hash(),
            fields,
            occurred_at_us: record.occurred_at_us,
            commit_lsn: record.commit_lsn,
            signing_gap: record.platform_wide != 0
                && record.action == crate::vocab::action::GAP
                && record.resource_id
                    == crate::audit::item::signing_gap_resource(&record.source_id),
        }
    }
}

/// How a platform chain's key starts.
const PLATFORM_KEY: &str = "(platform) @ ";

/// The source a chain key names (see [`chain_key`]).
fn chain_source(chain: &str) -> &str {
    chain
        .strip_prefix(PLATFORM_KEY)
        .or_else(|| chain.rsplit_once(" @ ").map(|(_, s)| s))
        .unwrap_or(chain)
}

/// A chain across sources: one per source and organization (`org1 @ <source>`; the platform chain is
/// `(platform) @ <source>`).
pub fn chain_key(source_id: &str, chain: &str) -> String {
    if chain.is_empty() {
        format!("{PLATFORM_KEY}{source_id}")
    } else {
        format!("{chain} @ {source_id}")
    }
}

/// What verification found for one chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub items: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The newest checkpoint that verified, and the commit time it covers.
    pub verified_seq: u64,
    pub verified_until_us: Option<i64>,
    pub checkpoints: u64,
    /// The first thing that does not hold, said plainly.
    pub failure: Option<String>,
    /// In a chain the links do not hold whole (a filtered export; the platform chain of an export beside
    /// items of no organization): positions missing between its items, or up to a checkpoint beyond its
    /// last, whose absence could not be judged. Such a chain is not proven whole.
    #[serde(skip_serializing_if = "is_zero")]
    pub unjudged: u64,
    /// Why a chain in which nothing failed is still not proven: verified with checkpoint keys, yet no
    /// signed checkpoint covers any of its items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unproven: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Verify chains: every item's hash from its content and predecessor, continuity (no item missing, added or
/// out of order), and every checkpoint (signature by a trusted key, and the chain reaching it with its
/// head). `whole` says which chains the links hold as a whole range (not a filtered export): there a missing
/// item between two present ones is a failure, and a checkpoint beyond the last item means the tail was cut.
pub fn verify(
    links: Vec<Link>,
    checkpoints: &[Checkpoint],
    keys: &[PublicKey],
    whole: Completeness,
) -> Vec<ChainReport> {
    verify_knowing(links, checkpoints, keys, whole, &[])
}

/// Where a source's checkpoint signing was last turned off: its record's commit position and time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, clickhouse::Row)]
pub struct SigningGap {
    pub source_id: String,
    pub commit_lsn: u64,
    pub occurred_at_us: i64,
}

/// As [`verify`], also told where signing was turned off by records outside `links` (the platform chain,
/// when an organization's chain is verified on its own). Records among `links` count as well. Records are
/// read from the items themselves: a forged one can only make less proven, never more.
pub fn verify_knowing(
    mut links: Vec<Link>,
    checkpoints: &[Checkpoint],
    keys: &[PublicKey],
    whole: Completeness,
    signing_gaps: &[SigningGap],
) -> Vec<ChainReport> {
    links.sort_by(|a, b| {
        (a.chain.as_str(), a.fields.chain_seq).cmp(&(b.chain.as_str(), b.fields.chain_seq))
    });
    let mut reports: Vec<ChainReport> = Vec::new();
    // Per source, where checkpoint signing was last turned off.
    let mut signing_off: HashMap<&str, (u64, i64)> = HashMap::new();
    let known = signing_gaps
        .iter()
        .map(|g| (g.source_id.as_str(), g.commit_lsn, g.occurred_at_us));
    let found = links
        .iter()
        .filter(|l| l.signing_gap)
        .map(|l| (chain_source(&l.chain), l.commit_lsn, l.occurred_at_us));
    for (source, lsn, us) in known.chain(found) {
        let e = signing_off.entry(source).or_insert((0, 0));
        if lsn >= e.0 {
            *e = (lsn, us);
        }
    }
    let mut by_chain: HashMap<String, Vec<&Link>> = HashMap::new();
    for l in &links {
        by_chain.entry(l.chain.clone()).or_default().push(l);
    }
    let mut chains: Vec<String> = by_chain.keys().cloned().collect();
    for c in checkpoints {
        let k = chain_key(&c.source_id, &c.organization_id);
        if !chains.contains(&k) {
            chains.push(k);
        }
    }
    chains.sort();
    for chain in chains {
        let complete = if chain.starts_with(PLATFORM_KEY) {
            whole.platform
        } else {
            whole.organizations
        };
        let items = by_chain.remove(&chain).unwrap_or_default();
        let mut r = ChainReport {
            chain: chain.clone(),
            items: items.len() as u64,
            first_seq: items.first().map_or(0, |l| l.fields.chain_seq),
            last_seq: items.last().map_or(0, |l| l.fields.chain_seq),
            ..Default::default()
        };
        let fail = |r: &mut ChainReport, m: String| {
            if r.failure.is_none() {
                r.failure = Some(m);
            }
        };
        let mut hashes: HashMap<u64, &str> = HashMap::new();
        let mut prev: Option<&Link> = None;
        for l in &items {
            let f = &l.fields;
            let expected = link(&f.chain_prev, &l.content);
            if expected != f.chain_hash {
                fail(
                    &mut r,
                    format!(
                        "item {} (chain position {}): its content does not match its hash: the item was altered",
                        l.id, f.chain_seq
                    ),
                );
            }
            if let Some(p) = prev {
                if f.chain_seq == p.fields.chain_seq && p.id == l.id {
                    fail(
                        &mut r,
                        format!(
                            "item {} (chain position {}) is stored twice, under another organization or commit time: a copy was written into the store, and reads may show either",
                            l.id, f.chain_seq
                        ),
                    );
                } else if f.chain_seq == p.fields.chain_seq {
                    fail(
                        &mut r,
                        format!(
                            "items {} and {} both claim chain position {}: an item was inserted",
                            p.id, l.id, f.chain_seq
                        ),
                    );
                } else if f.chain_seq == p.fields.chain_seq + 1 {
                    if f.chain_prev != p.fields.chain_hash {
                        fail(
                            &mut r,
                            format!(
                                "item {} (chain position {}) does not follow item {}: items were removed, inserted or reordered",
                                l.id, f.chain_seq, p.id
                            ),
                        );
                    }
                } else if !complete {
                    r.unjudged += f.chain_seq - p.fields.chain_seq - 1;
                } else {
                    fail(
                        &mut r,
                        format!(
                            "chain positions {} to {} are missing between items {} and {}: items were deleted",
                            p.fields.chain_seq + 1,
                            f.chain_seq - 1,
                            p.id,
                            l.id
                        ),
                    );
                }
            } else if complete && f.chain_seq == 1 && f.chain_prev != GENESIS {
                fail(
                    &mut r,
                    format!(
                        "item {} is the chain's first but does not start from the genesis hash",
                        l.id
                    ),
                );
            }
            hashes.insert(f.chain_seq, &f.chain_hash);
            prev = Some(l);
        }
        let mut cps: Vec<&Checkpoint> = checkpoints
            .iter()
            .filter(|c| chain_key(&c.source_id, &c.organization_id) == chain)
            .collect();
        cps.sort_by_key(|c| c.chain_seq);
        let mut tail_to = r.last_seq;
        let first = items.first().copied();
        // Whether a checkpoint says the first item here lies where each day opened with a signed opening
        // (see `Chainer::linked`), and what its opening says.
        let mut opens_days = false;
        let mut opening: Option<i64> = None;
        let mut verified_lsn = 0u64;
        for c in cps {
            r.checkpoints += 1;
            if c.format > CHECKPOINT_FORMAT {
                fail(
                    &mut r,
                    format!(
                        "checkpoint at chain position {} is in format {}, which this verifier does not know: verify with a newer waltrail",
                        c.chain_seq, c.format
                    ),
                );
                continue;
            }
            let Some(key) = keys
                .iter()
                .find(|k| k.key_id == c.key_id && !k.exports_only)
            else {
                fail(
                    &mut r,
                    format!(
                        "checkpoint at chain position {} is signed with key {}, which is not a trusted key",
                        c.chain_seq, c.key_id
                    ),
                );
                continue;
            };
            if !key.verifies(c) {
                fail(
                    &mut r,
                    format!(
                        "checkpoint at chain position {}: its signature does not hold: the checkpoint was forged or altered",
                        c.chain_seq
                    ),
                );
                continue;
            }
            opens_days |= c.format >= 2
                && first.is_some_and(|f| {
                    c.signed_from > 0 && (c.signed_from..=c.chain_seq).contains(&f.fields.chain_seq)
                });
            if first.is_some_and(|f| f.fields.chain_seq == c.chain_seq)
                && c.opens_after_us.is_some()
            {
                opening = c.opens_after_us;
            }
            match hashes.get(&c.chain_seq) {
                Some(h) if *h == c.head_hash => {
                    let newer = c.chain_seq >= r.verified_seq;
                    if newer && r.failure.is_none() {
                        r.verified_seq = c.chain_seq;
                        r.verified_until_us = Some(c.commit_time_us);
                        verified_lsn = c.commit_lsn;
                    }
                }
                Some(_) => fail(
                    &mut r,
                    format!(
                        "the chain at position {} does not end where its signed checkpoint says: items up to there were altered",
                        c.chain_seq
                    ),
                ),
                // Past the last item of a chain held whole from some item on: every item after one in the
                // range is in it too (stored later, whatever its commit time), so this is a cut, however
                // old the checkpoint's commit time (a replication origin's) is.
                None if complete && r.items > 0 && c.chain_seq > r.last_seq => {
                    let m = tail_cut(&r, c);
                    fail(&mut r, m)
                }
                // Committed before the range the links hold whole: its items may be gone by design.
                None if complete && whole.since_us.is_some_and(|s| c.commit_time_us < s) => {}
                None if !complete && c.chain_seq > tail_to => {
                    // Checkpoints come in chain order: each position past the last item counted once.
                    r.unjudged += c.chain_seq - tail_to;
                    tail_to = c.chain_seq;
                }
                None if c.chain_seq > r.last_seq => {
                    let m = tail_cut(&r, c);
                    fail(&mut r, m)
                }
                // Committed inside the range (or no range said): the items it ends with must be there.
                None if complete && whole.since_us.is_some() => {
                    let first = r.first_seq;
                    fail(
                        &mut r,
                        format!(
                            "chain positions {} to {} are missing: a signed checkpoint covers them, committed inside the range, but the chain starts at {first}: items were deleted",
                            c.chain_seq,
                            first.saturating_sub(1)
                        ),
                    )
                }
                None => {}
            }
        }
        // A whole range from a day's start: its first item (unless the chain's first) was committed after
        // one older than the range, and a signed opening says so. Deleting the range's oldest items with
        // their checkpoints leaves a first item whose opening names an item inside the range, or none.
        if let (true, Some(since), Some(f)) = (complete, whole.since_us, first) {
            if f.fields.chain_seq > 1 && f.occurred_at_us >= since {
                match opening {
                    Some(t) if t >= since => fail(
                        &mut r,
                        format!(
                            "chain positions up to {} are missing: the signed checkpoint of item {} (chain position {}) says the item before it was committed at {}, inside the range, but the chain starts there: items were deleted",
                            f.fields.chain_seq - 1,
                            f.id,
                            f.fields.chain_seq,
                            micros_text(t)
                        ),
                    ),
                    Some(_) => {}
                    None if opens_days && since.rem_euclid(DAY_US) == 0 => fail(
                        &mut r,
                        format!(
                            "item {} (chain position {}) is the chain's first in the range, committed inside it, but no signed checkpoint opens the chain there (each day's first item is signed with when the item before it was committed): the items before it were deleted, with their checkpoints",
                            f.id, f.fields.chain_seq
                        ),
                    ),
                    None => {}
                }
            }
        }
        // Signing turned off after the chain's last verified checkpoint: what the chain gained since is
        // intact as stored, but nothing signed says it was there.
        if let (None, Some((off_lsn, off_us))) = (
            &r.failure,
            signing_off
                .get(chain_source(&chain))
                .filter(|(lsn, _)| *lsn > verified_lsn),
        ) {
            let after = items
                .iter()
                .filter(|l| l.commit_lsn >= *off_lsn && !l.signing_gap)
                .count();
            if after > 0 && r.verified_seq > 0 {
                r.unproven = Some(format!(
                    "checkpoint signing was turned off at {} (recorded in the trail), and the {after} item(s) captured since are covered by no signed checkpoint: intact as stored, but not proven",
                    micros_text(*off_us)
                ));
            }
        }
        if r.failure.is_none()
            && r.items > 0
            && r.verified_seq == 0
            && keys.iter().any(|k| !k.exports_only)
        {
            r.unproven = Some(
                "no signed checkpoint covers any of its items: intact as stored, but not proven (written while checkpoints were off, or its checkpoints were removed)"
                    .to_owned(),
            );
        }
        reports.push(r);
    }
    reports
}

/// Holds an organization's chains (and the platform chain) to its sources' rosters committed in a range:
/// each roster signed by a trusted key, a source's rosters without a number missing, and every chain the
/// newest one lists — the organization's own and the platform chain — held in the store at least up to the
/// position it lists, unless the chain's newest item then was older than the range. `rosters` are the
/// range's roster headers with the newest of each source's entries filled in; `active`: the sources that
/// signed checkpoints (in format 2, which rosters came with) in the range. Findings go to the reports' lines,
/// a chain with none gets a line of its own.
pub fn check_rosters(
    rosters: &[Roster],
    active: &[String],
    keys: &[PublicKey],
    org: &str,
    since_us: Option<i64>,
    reports: &mut Vec<ChainReport>,
) {
    if !keys.iter().any(|k| !k.exports_only) {
        return;
    }
    let note = |reports: &mut Vec<ChainReport>, chain: String, m: String| match reports
        .iter_mut()
        .find(|r| r.chain == chain)
    {
        Some(r) => {
            r.failure.get_or_insert(m);
        }
        None => reports.push(ChainReport {
            chain,
            failure: Some(m),
            ..Default::default()
        }),
    };
    let mut sources: Vec<&str> = rosters.iter().map(|r| r.source_id.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    for source in active {
        if !sources.contains(&source.as_str()) {
            note(
                reports,
                chain_key(source, org),
                format!("source {source} signed checkpoints in the range but no roster of it is in the store: its rosters were removed (and with them, perhaps, whole chains)"),
            );
        }
    }
    for source in sources {
        let line = chain_key(source, org);
        let mut of: Vec<&Roster> = rosters.iter().filter(|r| r.source_id == source).collect();
        of.sort_by_key(|r| r.roster_seq);
        if let Some(bad) = of.iter().find(|r| !r.signed_by(keys)) {
            note(
                reports,
                line.clone(),
                format!("roster {} of source {source} does not verify under a trusted key: forged or altered", bad.roster_seq),
            );
            continue;
        }
        if let Some(w) = of
            .windows(2)
            .find(|w| w[1].roster_seq != w[0].roster_seq + 1)
        {
            note(
                reports,
                line.clone(),
                format!(
                    "rosters {} to {} of source {source} are missing: removed from the store",
                    w[0].roster_seq + 1,
                    w[1].roster_seq - 1
                ),
            );
            continue;
        }
        // The newest full roster and those of new chains after it: their entries were read.
        let from = of
            .iter()
            .filter(|r| r.full)
            .map(|r| r.roster_seq)
            .max()
            .unwrap_or(0);
        let listed: Vec<&&Roster> = of.iter().filter(|r| r.roster_seq >= from).collect();
        if let Some(bad) = listed
            .iter()
            .find(|r| Roster::digest(&Roster::chains_json(&r.chains)) != r.chains_sha256)
        {
            note(
                reports,
                line.clone(),
                format!("roster {} of source {source}: its list of chains does not match its signed digest: altered", bad.roster_seq),
            );
            continue;
        }
        let claims = furthest_listed(source, &listed, org);
        hold_to_claims(&claims, since_us, "the store", reports);
    }
}

/// Rosters cut from a source's sequence's tail: a signed checkpoint (each source's one naming the highest
/// roster number) names a roster the store does not hold (`stored_max`: each source's highest stored).
pub fn check_roster_tail(
    claimed: &[Checkpoint],
    stored_max: &HashMap<String, u64>,
    keys: &[PublicKey],
    org: &str,
    reports: &mut Vec<ChainReport>,
) {
    for c in claimed {
        let have = stored_max.get(&c.source_id).copied().unwrap_or(0);
        if c.roster_seq <= have {
            continue;
        }
        let m = if keys.iter().any(|k| k.verifies(c)) {
            format!(
                "rosters {} to {} of source {} are missing: a signed checkpoint (chain position {} of {}) names roster {}, but the store's last is {have}: removed, and with them, perhaps, whole chains",
                have + 1,
                c.roster_seq,
                c.source_id,
                c.chain_seq,
                chain_key(&c.source_id, &c.organization_id),
                c.roster_seq
            )
        } else {
            format!(
                "a checkpoint row of source {} (chain position {} of {}) names roster {} the store lacks, and does not verify under a trusted key: written by hand",
                c.source_id,
                c.chain_seq,
                chain_key(&c.source_id, &c.organization_id),
                c.roster_seq
            )
        };
        let line = chain_key(&c.source_id, org);
        match reports.iter_mut().find(|r| r.chain == line) {
            Some(r) => {
                r.failure.get_or_insert(m);
            }
            None => reports.push(ChainReport {
                chain: line,
                failure: Some(m),
                ..Default::default()
            }),
        }
    }
}

/// What a source's rosters say of an organization's chain or the platform chain: listed up to `seq`, its
/// newest item then committed at `newest_us`, by the roster numbered `roster_seq` signed at `signed_at_us`.
/// An export carries these (covered by its seal), so an offline verifier holds the chains to them too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RosterClaim {
    pub source_id: String,
    pub chain: String,
    pub seq: u64,
    pub newest_us: i64,
    pub roster_seq: u64,
    pub signed_at_us: i64,
}

/// Each of `org`'s chains (and the platform chain) at the furthest position `listed` rosters give it.
fn furthest_listed(source: &str, listed: &[&&Roster], org: &str) -> Vec<RosterClaim> {
    let mut out: Vec<RosterClaim> = Vec::new();
    for r in listed {
        for e in r
            .chains
            .iter()
            .filter(|e| e.chain == org || e.chain.is_empty())
        {
            let claim = RosterClaim {
                source_id: source.to_owned(),
                chain: e.chain.clone(),
                seq: e.seq,
                newest_us: e.newest_us,
                roster_seq: r.roster_seq,
                signed_at_us: r.commit_time_us,
            };
            match out.iter_mut().find(|c| c.chain == e.chain) {
                Some(c) if c.seq >= e.seq => {}
                Some(c) => *c = claim,
                None => out.push(claim),
            }
        }
    }
    out
}

/// The claims an export carries: those of rosters that verify (signed, numbered without gaps, their
/// entries matching their digest), for `org`'s chains and the platform chain. Rosters that do not verify
/// give none (verifying the store names them).
pub fn roster_claims(rosters: &[Roster], keys: &[PublicKey], org: &str) -> Vec<RosterClaim> {
    let mut sources: Vec<&str> = rosters.iter().map(|r| r.source_id.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let mut out = Vec::new();
    for source in sources {
        let mut of: Vec<&Roster> = rosters.iter().filter(|r| r.source_id == source).collect();
        of.sort_by_key(|r| r.roster_seq);
        let from = of
            .iter()
            .filter(|r| r.full)
            .map(|r| r.roster_seq)
            .max()
            .unwrap_or(0);
        let listed: Vec<&&Roster> = of.iter().filter(|r| r.roster_seq >= from).collect();
        let sound = of.iter().all(|r| r.signed_by(keys))
            && of
                .windows(2)
                .all(|w| w[1].roster_seq == w[0].roster_seq + 1)
            && listed
                .iter()
                .all(|r| Roster::digest(&Roster::chains_json(&r.chains)) == r.chains_sha256);
        if sound {
            out.extend(furthest_listed(source, &listed, org));
        }
    }
    out
}

/// Holds chains to roster claims: a chain listed up to a position while its newest item was inside the
/// range (`since_us`) must be held at least up to there.
pub fn hold_to_claims(
    claims: &[RosterClaim],
    since_us: Option<i64>,
    holder: &str,
    reports: &mut Vec<ChainReport>,
) {
    for c in claims
        .iter()
        .filter(|c| since_us.is_none_or(|s| c.newest_us >= s))
    {
        let key = chain_key(&c.source_id, &c.chain);
        let held = reports
            .iter()
            .find(|x| x.chain == key && x.items > 0)
            .map(|x| x.last_seq);
        if held.is_some_and(|h| h >= c.seq) {
            continue;
        }
        let m = format!(
            "the roster of source {} signed at {} lists this chain up to position {} (its newest item committed at {}, inside the range), but {} holds it {}: items were deleted, with their checkpoints",
            c.source_id,
            micros_text(c.signed_at_us),
            c.seq,
            micros_text(c.newest_us),
            holder,
            match held {
                Some(h) => format!("only up to {h}"),
                None => "not at all".to_owned(),
            }
        );
        match reports.iter_mut().find(|r| r.chain == key) {
            Some(r) => {
                r.failure.get_or_insert(m);
            }
            None => reports.push(ChainReport {
                chain: key,
                failure: Some(m),
                ..Default::default()
            }),
        }
    }
}

fn tail_cut(r: &ChainReport, c: &Checkpoint) -> String {
    format!(
        "a signed checkpoint covers {} items, but the chain ends at {}: the tail was cut",
        c.chain_seq, r.last_seq
    )
}

/// A commit time for a message: RFC 3339 in UTC, or the raw microseconds when out of range.
fn micros_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| format!("{us} µs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, org: &str) -> Record {
        Record {
            id: format!("00000000-0000-0000-0000-{n:012}"),
            source_id: "s".into(),
            organization_id: org.into(),
            commit_lsn: 100 + n as u64,
            summary: format!("item {n}"),
            diff: "{}".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_borrowed_and_owned_again_is_the_same() {
        // Every field distinct, so a field put in another's place shows.
        let mut r = record(7, "org");
        let mut i = 0;
        let mut next = || {
            i += 1;
            format!("f{i}")
        };
        for f in [
            &mut r.event_id,
            &mut r.action,
            &mut r.source,
            &mut r.principal_id,
            &mut r.principal_type,
            &mut r.display_name,
            &mut r.actor_email,
            &mut r.on_behalf_of_id,
            &mut r.on_behalf_of_display,
            &mut r.auth_method,
            &mut r.key_id,
            &mut r.session_id,
            &mut r.request_id,
            &mut r.run_id,
            &mut r.client_ip,
            &mut r.user_agent,
            &mut r.project_id,
            &mut r.resource_type,
            &mut r.resource_id,
            &mut r.resource_display,
            &mut r.table_name,
            &mut r.actor_source,
            &mut r.context_status,
        ] {
            *f = next();
        }
        r.changed_fields = vec!["a".into(), "b".into()];
        r.occurred_at_us = -5;
        r.xid = 9;
        r.seq = 3;
        r.platform_wide = 1;
        assert_eq!(r.as_ref().to_record(), r);
    }

    fn chained(n: u32, key: Option<SigningKey>) -> (Vec<Link>, Vec<Checkpoint>) {
        let mut c = Chainer::new("s".into(), HashMap::new(), key, 3, 3600);
        let mut links = Vec::new();
        let mut cps = Vec::new();
        for i in 1..=n {
            let r = record(i, "org1");
            let f = c.link("org1", &r);
            links.push(Link::of(&r, f));
            cps.extend(c.checkpoints_due(&[("org1".into(), r.commit_lsn, r.id.clone())], 0));
        }
        (links, cps)
    }

    fn key() -> SigningKey {
        SigningKey::from_seed(&[7u8; 32]).unwrap()
    }

    /// An export of two sources' chains of org1 as the server writes it, signed with `key` when given.
    fn export_lines(signer: Option<&SigningKey>) -> Vec<String> {
        export_of(signer, |_, _| true, 0)
    }

    /// The export a server writes of what the store holds: the items `held(source, position)` of two
    /// sources' chains of org1 (each item committed at time = its position, checkpointed every 3), with
    /// every checkpoint, signed with `signer` and saying it holds every item committed since `since_us`.
    fn export_of(
        signer: Option<&SigningKey>,
        held: impl Fn(&str, u32) -> bool,
        since_us: i64,
    ) -> Vec<String> {
        export_with(signer, held, since_us, &[])
    }

    /// As [`export_of`], with `extra` lines (roster claims) before the last line.
    fn export_with(
        signer: Option<&SigningKey>,
        held: impl Fn(&str, u32) -> bool,
        since_us: i64,
        extra: &[String],
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let mut cps = Vec::new();
        for source in ["s", "s2"] {
            let mut c = Chainer::new(source.into(), HashMap::new(), Some(key()), 3, 3600);
            for i in 1..=7 {
                let mut r = record(i, "org1");
                r.source_id = source.into();
                r.occurred_at_us = i as i64;
                let f = c.link("org1", &r);
                if held(source, i) {
                    lines.push(serde_json::json!({"record": r, "chain": f}).to_string());
                }
                cps.extend(
                    c.checkpoints_due(&[("org1".into(), r.commit_lsn, r.id.clone())], i as i64),
                );
            }
        }
        lines.extend(
            cps.iter()
                .map(|c| serde_json::json!({ "checkpoint": c }).to_string()),
        );
        lines.extend(extra.iter().cloned());
        let mut digest = ExportDigest::default();
        lines.iter().for_each(|l| digest.add(l));
        let mut info = ExportInfo {
            complete: true,
            platform_complete: Some(true),
            seal: None,
        };
        if let Some(k) = signer {
            info.seal(
                k,
                "org1",
                "format=ndjson",
                (1_800_000_000_000_000, since_us),
                &digest,
            );
        }
        lines.push(serde_json::json!({ "export": info }).to_string());
        lines
    }

    fn verify_lines(lines: &[String], keys: &[PublicKey]) -> ExportVerdict {
        verify_export(lines.iter().map(|l| Ok(l.clone())), keys).expect("export lines parse")
    }

    fn first_failure(v: &ExportVerdict) -> String {
        v.failure
            .clone()
            .or_else(|| v.reports.iter().find_map(|r| r.failure.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn a_signed_export_proves_it_holds_what_the_server_sent_and_nothing_less() {
        let keys = [key().public_key()];
        let whole = export_lines(Some(&key()));
        let v = verify_lines(&whole, &keys);
        assert_eq!(first_failure(&v), "", "{v:#?}");
        assert_eq!(v.unsigned, None);
        let seal = v.sealed.expect("sealed");
        assert_eq!(
            (seal.organization_id.as_str(), seal.lines),
            ("org1", 14 + 6)
        );
        // What the chains alone cannot see: a whole chain (source s2's items and checkpoints), or a
        // chain's oldest items, taken out.
        let no_s2: Vec<String> = whole
            .iter()
            .filter(|l| !l.contains(r#""source_id":"s2""#))
            .cloned()
            .collect();
        assert!(no_s2.len() < whole.len());
        let v = verify_lines(&no_s2, &keys);
        assert!(
            first_failure(&v).contains("not those the server signed"),
            "{v:#?}"
        );
        let v = verify_lines(&whole[1..], &keys);
        assert!(first_failure(&v).contains("not those the server signed"));
        // Lines swapped, or a blank line slipped in: not what was sent.
        let mut swapped = whole.clone();
        swapped.swap(0, 7);
        assert!(
            first_failure(&verify_lines(&swapped, &keys)).contains("not those the server signed")
        );
        let mut blank = whole.clone();
        blank.insert(3, String::new());
        assert!(first_failure(&verify_lines(&blank, &keys)).contains("not those the server signed"));
        // The last line's claims edited (filtered, another organization): its signature fails.
        let last = whole.len() - 1;
        for (from, to) in [
            (r#""complete":true"#, r#""complete":false"#),
            (r#""organization_id":"org1""#, r#""organization_id":"org2""#),
        ] {
            let mut edited = whole.clone();
            edited[last] = edited[last].replace(from, to);
            assert_ne!(edited[last], whole[last]);
            let v = verify_lines(&edited, &keys);
            assert!(
                first_failure(&v).contains("does not verify with key"),
                "{from}: {v:#?}"
            );
        }
        // Signed by a key the reader did not give: refused, not passed over.
        let other = SigningKey::from_seed(&[9u8; 32]).unwrap();
        let v = verify_lines(&whole, &[other.public_key()]);
        assert!(
            first_failure(&v).contains("not among the given public keys"),
            "{v:#?}"
        );
        // A forged item carrying an "export" key too (which the signature must not pass over), and a blank
        // line after the last one: not what was sent.
        let mut forged = whole.clone();
        let extra = whole[6].replace(r#""chain":"#, r#""export":{"complete":true},"chain":"#);
        forged.insert(7, extra);
        let v = verify_lines(&forged, &keys);
        assert!(
            first_failure(&v).contains("carrying the export's last line"),
            "{v:#?}"
        );
        let mut trailing = whole.clone();
        trailing.push(" ".into());
        assert!(first_failure(&verify_lines(&trailing, &keys))
            .contains("follows the export's last line"));
        // The signature stripped, or a server without a key: no failure found, nothing proven.
        let unsigned = export_lines(None);
        let v = verify_lines(&unsigned, &keys);
        assert_eq!(first_failure(&v), "");
        assert!(v.sealed.is_none());
        assert!(v.unsigned.is_some_and(|w| w.contains("not signed")));
    }

    #[test]
    fn a_signed_export_of_a_store_whose_oldest_items_were_deleted_fails() {
        let keys = [key().public_key()];
        // Positions 1–4 of source s deleted from the store inside the window the export covers: the
        // checkpoints at 1 and 3 (committed at 1 and 3, since = 1) proves they were there.
        let cut = export_of(Some(&key()), |src, i| src != "s" || i > 4, 1);
        let v = verify_lines(&cut, &keys);
        assert!(
            first_failure(&v).contains("chain positions 1 to 4 are missing"),
            "{v:#?}"
        );
        // The same items gone before the window (retention): nothing wrong.
        let expired = export_of(Some(&key()), |src, i| src != "s" || i > 4, 4);
        assert_eq!(first_failure(&verify_lines(&expired, &keys)), "");
        // A source all of whose items expired, its checkpoints still in the export: nothing wrong; the
        // same source's items all deleted inside the window: found.
        let retired = export_of(Some(&key()), |src, _| src != "s2", 100);
        assert_eq!(first_failure(&verify_lines(&retired, &keys)), "");
        let deleted = export_of(Some(&key()), |src, _| src != "s2", 1);
        assert!(!first_failure(&verify_lines(&deleted, &keys)).is_empty());
    }

    /// Each chain's first item of a day is checkpointed as it is linked: once retention dropped the days
    /// before the window, the oldest items it keeps still cannot be deleted unseen.
    #[test]
    fn the_first_item_of_each_day_is_checkpointed_so_the_window_has_no_blind_head() {
        const DAY: i64 = 86_400_000_000;
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 1000, 1 << 40);
        let mut links = Vec::new();
        let mut cps = Vec::new();
        // Day 1: items 1–3; day 2: items 4–7, two per transaction.
        for i in 1..=7u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = if i <= 3 {
                DAY + i as i64
            } else {
                2 * DAY + i as i64
            };
            let f = c.link("org1", &r);
            links.push(Link::of(&r, f));
            cps.extend(c.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ));
        }
        let positions: Vec<u64> = cps.iter().map(|c| c.chain_seq).collect();
        assert_eq!(
            positions,
            [1, 4],
            "the chain's first item, and day 2's first"
        );
        let keys = [key().public_key()];
        let window = |since| Completeness {
            since_us: Some(since),
            ..Completeness::WHOLE
        };
        // Retention dropped day 1: nothing wrong.
        let kept: Vec<Link> = links[3..].to_vec();
        let r = &verify(kept.clone(), &cps, &keys, window(2 * DAY))[0];
        assert_eq!(r.failure, None, "{r:?}");
        // Day 2's first items deleted as well: its checkpoint, inside the window, shows it.
        let r = &verify(links[5..].to_vec(), &cps, &keys, window(2 * DAY))[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("chain positions 4 to 5 are missing")),
            "{r:?}"
        );
        // A replay links the same items the same way and signs the very same checkpoints.
        let mut again = Chainer::new("s".into(), HashMap::new(), Some(key()), 1000, 1 << 40);
        let mut replayed = Vec::new();
        for i in 1..=7u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = if i <= 3 {
                DAY + i as i64
            } else {
                2 * DAY + i as i64
            };
            again.link("org1", &r);
            replayed.extend(again.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ));
        }
        assert_eq!(replayed, cps);
    }

    #[test]
    fn deleting_a_ranges_oldest_items_with_their_checkpoints_shows() {
        const DAY: i64 = 86_400_000_000;
        // Days 1, 2 and 3, three items each; checkpoints only where days open (and the first item).
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 1000, 1 << 40);
        let mut links = Vec::new();
        let mut cps = Vec::new();
        for i in 1..=9u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = (1 + (i as i64 - 1) / 3) * DAY + 60_000_000 * i as i64;
            let f = c.link("org1", &r);
            links.push(Link::of(&r, f));
            cps.extend(c.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ));
        }
        let opened: Vec<(u64, Option<i64>)> = cps
            .iter()
            .map(|c| (c.chain_seq, c.opens_after_us))
            .collect();
        assert_eq!(
            opened,
            [
                (1, None),
                (4, Some(links[2].occurred_at_us)),
                (7, Some(links[5].occurred_at_us))
            ],
            "each day opens with when the item before it was committed"
        );
        let keys = [key().public_key()];
        let window = |since| Completeness {
            since_us: Some(since),
            ..Completeness::WHOLE
        };
        let without = |drop: &[u64]| -> Vec<Checkpoint> {
            cps.iter()
                .filter(|c| !drop.contains(&c.chain_seq))
                .cloned()
                .collect()
        };
        // Retention dropped day 1: the range from day 2 starts where an older item left off.
        let r = &verify(links[3..].to_vec(), &cps, &keys, window(2 * DAY))[0];
        assert_eq!((r.failure.as_deref(), r.verified_seq), (None, 7), "{r:?}");
        // Day 2's first items and their checkpoint deleted: no opening where the range starts.
        let r = &verify(
            links[5..].to_vec(),
            &without(&[1, 4]),
            &keys,
            window(2 * DAY),
        )[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("no signed checkpoint opens the chain there")),
            "{r:?}"
        );
        // All of day 2 and its checkpoint deleted: day 3's opening names an item inside the range.
        let r = &verify(
            links[6..].to_vec(),
            &without(&[1, 4]),
            &keys,
            window(2 * DAY),
        )[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("chain positions up to 6 are missing")),
            "{r:?}"
        );
        // A range that starts inside a day cannot tell a deletion from the day's earlier items: no
        // verdict on the first item, and none falsely.
        let r = &verify(
            links[5..].to_vec(),
            &without(&[1, 4]),
            &keys,
            window(2 * DAY + 1),
        )[0];
        assert_eq!(r.failure, None, "{r:?}");
        // Every checkpoint deleted with the oldest items: nothing fails, nothing is proven.
        let r = &verify(links[5..].to_vec(), &[], &keys, window(2 * DAY))[0];
        assert_eq!(r.failure, None, "{r:?}");
        assert!(r.unproven.is_some(), "{r:?}");
        // Checkpoints of the first format (no openings) are judged as before.
        let mut c1 = Chainer::new("s".into(), HashMap::new(), Some(key()), 1000, 1 << 40);
        let mut old = Vec::new();
        let mut old_links = Vec::new();
        for i in 1..=9u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = (1 + (i as i64 - 1) / 3) * DAY + 60_000_000 * i as i64;
            old_links.push(Link::of(&r, c1.link("org1", &r)));
            for mut cp in c1.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ) {
                cp.format = 1;
                cp.opens_after_us = None;
                key().sign(&mut cp);
                old.push(cp);
            }
        }
        old.retain(|c| c.chain_seq == 7);
        let r = &verify(old_links[5..].to_vec(), &old, &keys, window(2 * DAY))[0];
        assert_eq!((r.failure.as_deref(), r.verified_seq), (None, 7), "{r:?}");
        // An opening's claim is signed: moved to before the range, the signature fails.
        let mut forged = without(&[1, 4]);
        if let Some(c) = forged.iter_mut().find(|c| c.chain_seq == 7) {
            c.opens_after_us = Some(DAY);
        }
        let r = &verify(links[6..].to_vec(), &forged, &keys, window(2 * DAY))[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("signature does not hold")),
            "{r:?}"
        );
    }

    #[test]
    fn items_linked_before_checkpoints_began_need_no_opening() {
        const DAY: i64 = 86_400_000_000;
        let at = |i: u32| (1 + (i as i64 - 1) / 3) * DAY + 60_000_000 * i as i64;
        // Days 1 and 2 linked without a key; the key configured from day 3 on (a restart: the heads go on).
        let mut c = Chainer::new("s".into(), HashMap::new(), None, 1000, 1 << 40);
        let mut links = Vec::new();
        for i in 1..=6u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = at(i);
            links.push(Link::of(&r, c.link("org1", &r)));
        }
        let mut heads = HashMap::new();
        heads.insert(
            "org1".to_owned(),
            Head {
                seq: 6,
                hash: links[5].fields.chain_hash.clone(),
                newest_us: Some(at(6)),
                ..Default::default()
            },
        );
        let mut c = Chainer::new("s".into(), heads, Some(key()), 1000, 1 << 40);
        let mut cps = Vec::new();
        for i in 7..=9u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = at(i);
            links.push(Link::of(&r, c.link("org1", &r)));
            cps.extend(c.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ));
        }
        assert_eq!(
            cps.iter()
                .map(|c| (c.chain_seq, c.signed_from))
                .collect::<Vec<_>>(),
            [(7, 7)],
            "day 3 opens, and openings are signed from there"
        );
        let keys = [key().public_key()];
        let window = Completeness {
            since_us: Some(2 * DAY),
            ..Completeness::WHOLE
        };
        // Day 1 expired: day 2's first item had no key to open it, and is not asked for an opening.
        let r = &verify(links[3..].to_vec(), &cps, &keys, window)[0];
        assert_eq!((r.failure.as_deref(), r.verified_seq), (None, 7), "{r:?}");
        // Days 2 and 3's first item deleted, with its checkpoint... and every checkpoint with it: nothing
        // signed is left to say so, and the chain is not proven.
        let r = &verify(links[7..].to_vec(), &[], &keys, window)[0];
        assert_eq!(r.failure, None, "{r:?}");
        assert!(r.unproven.is_some(), "{r:?}");
        // A later checkpoint still carries the span: day 3's opening deleted with its items shows.
        let mut r10 = record(10, "org1");
        r10.occurred_at_us = at(9) + 1;
        links.push(Link::of(&r10, c.link("org1", &r10)));
        let last = c
            .checkpoint_now("org1", r10.commit_lsn, &r10.id, r10.occurred_at_us)
            .expect("a checkpoint");
        assert_eq!((last.chain_seq, last.signed_from), (10, 7));
        let r = &verify(links[8..].to_vec(), &[last], &keys, window)[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("no signed checkpoint opens the chain there")),
            "{r:?}"
        );
    }

    #[test]
    fn an_old_commit_time_does_not_excuse_the_items_before_it() {
        const DAY: i64 = 86_400_000_000;
        // Items 1–2 today, item 3 through a replication origin 40 days ago, items 4–6 today again.
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 3, 1 << 40);
        let mut links = Vec::new();
        let mut cps = Vec::new();
        for i in 1..=6u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = if i == 3 {
                10 * DAY
            } else {
                50 * DAY + i as i64
            };
            links.push(Link::of(&r, c.link("org1", &r)));
            cps.extend(c.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ));
        }
        assert!(
            cps.iter().all(|c| c.opens_after_us.is_none()),
            "no day later than every earlier item's began: {cps:?}"
        );
        let keys = [key().public_key()];
        let window = Completeness {
            since_us: Some(49 * DAY),
            ..Completeness::WHOLE
        };
        assert_eq!(verify(links.clone(), &cps, &keys, window)[0].failure, None);
        // Today's items before the old one deleted, with their checkpoints.
        let kept: Vec<Checkpoint> = cps.iter().filter(|c| c.chain_seq > 3).cloned().collect();
        let r = &verify(links[3..].to_vec(), &kept, &keys, window)[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("no signed checkpoint opens the chain there")),
            "{r:?}"
        );
        // The next day's first item opens after the newest of them, not after the old one.
        let mut r7 = record(7, "org1");
        r7.occurred_at_us = 51 * DAY;
        c.link("org1", &r7);
        let opened = c.take_pending();
        assert_eq!(
            opened.iter().map(|c| c.opens_after_us).collect::<Vec<_>>(),
            [Some(50 * DAY + 6)]
        );
    }

    #[test]
    fn a_tail_of_old_commit_times_cut_off_shows() {
        const DAY: i64 = 86_400_000_000;
        // Items 3–6 came through a replication origin with commit times days before the range, and were
        // stored inside it (so the range holds them); the checkpoint after item 6 carries its old time.
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 3, 1 << 40);
        let mut links = Vec::new();
        let mut cps = Vec::new();
        for i in 1..=6u32 {
            let mut r = record(i, "org1");
            r.occurred_at_us = if i <= 2 {
                10 * DAY + i as i64
            } else {
                DAY + i as i64
            };
            let f = c.link("org1", &r);
            links.push(Link::of(&r, f));
            cps.extend(c.checkpoints_due(
                &[("org1".into(), r.commit_lsn, r.id.clone())],
                r.occurred_at_us,
            ));
        }
        assert_eq!(
            cps.last().map(|c| (c.chain_seq, c.commit_time_us)),
            Some((6, DAY + 6))
        );
        let keys = [key().public_key()];
        let window = Completeness {
            since_us: Some(5 * DAY),
            ..Completeness::WHOLE
        };
        let r = &verify(links.clone(), &cps, &keys, window)[0];
        assert_eq!(r.failure, None, "{r:?}");
        let r = &verify(links[..4].to_vec(), &cps, &keys, window)[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("the tail was cut")),
            "{r:?}"
        );
    }

    #[test]
    fn a_stored_head_is_held_to_its_last_checkpoint() {
        let head = |seq: u64, cp: Option<(u64, u64)>| Head {
            seq,
            hash: "h".into(),
            stored_checkpoint: cp.map(|(s, every)| (s, "c".into(), every, 1)),
            ..Default::default()
        };
        assert_eq!(head(7, None).doubt(3), None, "never signed");
        assert_eq!(head(4, Some((3, 3))).doubt(3), None, "the next due at 6");
        assert_eq!(head(5, Some((3, 0))).doubt(3), None, "format 1: not known");
        assert!(head(6, Some((3, 3)))
            .doubt(3)
            .is_some_and(|d| d.contains("one was due by 6")));
        assert_eq!(
            head(6, Some((3, 3))).doubt(1000),
            None,
            "checkpoint_every_items raised since: due later"
        );
        let mut cut = head(4, Some((6, 3)));
        assert!(cut
            .doubt(3)
            .is_some_and(|d| d.contains("items were deleted")));
        cut.accept_doubt();
        assert_eq!((cut.seq, cut.hash.as_str(), cut.doubt(3)), (6, "c", None));
        // What reading the head back found comes first, and is accepted like the rest.
        let mut read = head(4, Some((3, 3)));
        read.read_doubt = Some("not the one the checkpoint signed".into());
        assert!(read.doubt(3).is_some_and(|d| d.contains("signed")));
        read.accept_doubt();
        assert_eq!(read.doubt(3), None);
    }

    /// A chain linked under another `checkpoint_every_items` than its last stored checkpoint's is signed
    /// under the new one at once: raised, then lowered again, the items between are held to the interval
    /// they were linked under (a start refused them as checkpoints deleted).
    #[test]
    fn a_changed_interval_is_signed_at_the_chains_next_item() {
        let stored = Head {
            seq: 4,
            hash: link(GENESIS, &[4; 32]),
            checkpointed_seq: 4,
            checkpointed_time_us: 10,
            newest_us: Some(10),
            stored_checkpoint: Some((4, "c".into(), 2, 1)),
            ..Default::default()
        };
        let heads = HashMap::from([("org1".to_owned(), stored)]);
        let mut c = Chainer::new("s".into(), heads, Some(key()), 1000, 1 << 40);
        let mut cps = Vec::new();
        for n in 0..30 {
            let r = record(n, "org1");
            let f = c.link("org1", &r);
            cps.extend(c.checkpoints_due(&[("org1".into(), 1, r.id.clone())], 20));
            assert_eq!(f.chain_seq, 5 + n as u64);
        }
        assert_eq!(
            cps.iter()
                .map(|cp| (cp.chain_seq, cp.every_items))
                .collect::<Vec<_>>(),
            [(5, 1000)],
            "one checkpoint, at once, under the new interval"
        );
        // Lowered back to 2 at the next start: held to 1000 from the checkpoint signed under it.
        let head = Head {
            seq: 34,
            stored_checkpoint: Some((5, "c".into(), 1000, 1)),
            ..Default::default()
        };
        assert_eq!(head.doubt(2), None);
    }

    #[test]
    fn rosters_list_every_chain_daily_and_new_ones_at_once() {
        const DAY: i64 = 86_400_000_000;
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 1000, 1 << 40);
        let mut rosters = Vec::new();
        let mut step = |c: &mut Chainer, i: u32, org: &str, t: i64| {
            let mut r = record(i, org);
            r.occurred_at_us = t;
            c.link(org, &r);
            rosters.extend(c.roster_due(r.commit_lsn, t));
        };
        step(&mut c, 1, "org1", DAY + 1);
        step(&mut c, 2, "org1", DAY + 2);
        step(&mut c, 3, "org2", DAY + 3);
        step(&mut c, 4, "org1", 2 * DAY + 1);
        let shape: Vec<(u64, bool, Vec<&str>)> = rosters
            .iter()
            .map(|r| {
                (
                    r.roster_seq,
                    r.full,
                    r.chains.iter().map(|e| e.chain.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (1, true, vec!["org1"]),
                (2, false, vec!["org2"]),
                (3, true, vec!["org1", "org2"])
            ]
        );
        let keys = [key().public_key()];
        let report = |chain: &str, last: u64| ChainReport {
            chain: chain.into(),
            items: last,
            first_seq: 1,
            last_seq: last,
            ..Default::default()
        };
        let check = |rosters: &[Roster], reports: &mut Vec<ChainReport>| {
            check_rosters(
                rosters,
                &["s".to_owned()],
                &keys,
                "org2",
                Some(DAY),
                reports,
            );
        };
        // Intact: org2's chain is there.
        let mut r = vec![report("org2 @ s", 1)];
        check(&rosters, &mut r);
        assert_eq!(r[0].failure, None, "{r:?}");
        // Its whole chain deleted, items and checkpoints: the rosters list it.
        let mut r = Vec::new();
        check(&rosters, &mut r);
        assert!(
            r.iter().any(|x| x.chain == "org2 @ s"
                && x.failure
                    .as_deref()
                    .is_some_and(|f| f.contains("not at all"))),
            "{r:?}"
        );
        // A roster removed; one forged; every roster removed while the source signed checkpoints.
        let mut r = vec![report("org2 @ s", 1)];
        check(&[rosters[0].clone(), rosters[2].clone()], &mut r);
        assert!(
            r[0].failure
                .as_deref()
                .is_some_and(|f| f.contains("rosters 2 to 2")),
            "{r:?}"
        );
        let mut forged = rosters.clone();
        forged[2].chains.retain(|e| e.chain != "org2");
        forged[2].chains_sha256 = Roster::digest(&Roster::chains_json(&forged[2].chains));
        let mut r = Vec::new();
        check(&forged, &mut r);
        assert!(
            r.iter().any(|x| x
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("does not verify"))),
            "{r:?}"
        );
        let mut r = vec![report("org2 @ s", 1)];
        check(&[], &mut r);
        assert!(
            r[0].failure
                .as_deref()
                .is_some_and(|f| f.contains("no roster")),
            "{r:?}"
        );
        // A chain whose newest item is older than the range may be gone by retention.
        let mut r = Vec::new();
        check_rosters(
            &rosters,
            &["s".to_owned()],
            &keys,
            "org2",
            Some(3 * DAY),
            &mut r,
        );
        assert!(r.iter().all(|x| x.failure.is_none()), "{r:?}");
    }

    #[test]
    fn an_export_is_held_to_the_rosters_the_server_read() {
        let claim = |source: &str, seq: u64| {
            serde_json::json!({"roster": RosterClaim {
                source_id: source.into(),
                chain: "org1".into(),
                seq,
                newest_us: 7,
                roster_seq: 1,
                signed_at_us: 7,
            }})
            .to_string()
        };
        let keys = [key().public_key()];
        // Both sources' chains whole: the claims hold.
        let lines = export_with(
            Some(&key()),
            |_, _| true,
            1,
            &[claim("s", 7), claim("s2", 7)],
        );
        let v = verify_lines(&lines, &keys);
        assert!(
            v.failure.is_none() && v.reports.iter().all(|r| r.failure.is_none()),
            "{v:#?}"
        );
        // Source s2's chain left out of the export (deleted whole from the store, checkpoints too).
        let mut lines = export_with(
            Some(&key()),
            |source, _| source != "s2",
            1,
            &[claim("s", 7), claim("s2", 7)],
        );
        lines.retain(|l| !(l.contains("\"checkpoint\"") && l.contains("\"s2\"")));
        let mut digest = ExportDigest::default();
        let n = lines.len() - 1;
        lines[..n].iter().for_each(|l| digest.add(l));
        let mut info = ExportInfo {
            complete: true,
            platform_complete: Some(true),
            seal: None,
        };
        info.seal(
            &key(),
            "org1",
            "format=ndjson",
            (1_800_000_000_000_000, 1),
            &digest,
        );
        lines[n] = serde_json::json!({ "export": info }).to_string();
        let v = verify_lines(&lines, &keys);
        assert!(
            v.reports.iter().any(|r| r.chain == "org1 @ s2"
                && r.failure
                    .as_deref()
                    .is_some_and(|f| f.contains("the export holds it not at all"))),
            "{v:#?}"
        );
        // A claim line that also carries the last line is refused.
        let mut bad = export_with(Some(&key()), |_, _| true, 1, &[]);
        let last = bad.pop().unwrap();
        let mut both: serde_json::Value = serde_json::from_str(&last).unwrap();
        both["roster"] =
            serde_json::from_str::<serde_json::Value>(&claim("s", 7)).unwrap()["roster"].clone();
        bad.push(both.to_string());
        let v = verify_lines(&bad, &keys);
        assert!(v.failure.is_some(), "{v:#?}");
    }

    #[test]
    fn full_rosters_leave_out_chains_older_than_retention_keeps() {
        const DAY: i64 = 86_400_000_000;
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 1000, 1 << 40)
            .with_retention_days(30);
        let mut r1 = record(1, "old");
        r1.occurred_at_us = DAY;
        c.link("old", &r1);
        c.roster_due(r1.commit_lsn, DAY);
        let mut r2 = record(2, "new");
        r2.occurred_at_us = 40 * DAY;
        c.link("new", &r2);
        let roster = c
            .roster_due(r2.commit_lsn, 40 * DAY)
            .expect("a new day's roster");
        assert!(roster.full);
        let listed: Vec<&str> = roster.chains.iter().map(|e| e.chain.as_str()).collect();
        assert_eq!(listed, ["new"], "the chain idle for 39 days is left out");
    }

    #[test]
    fn a_checkpoint_naming_a_roster_the_store_lacks_shows_a_cut_tail() {
        let mut c = Chainer::new("s".into(), HashMap::new(), Some(key()), 1, 1 << 40);
        let mut cps = Vec::new();
        for (i, org) in [(1, "org1"), (2, "org2"), (3, "org1")] {
            let r = record(i, org);
            c.link(org, &r);
            cps.extend(c.checkpoints_due(&[(org.into(), r.commit_lsn, r.id.clone())], 0));
            c.roster_due(r.commit_lsn, 0);
        }
        let last = cps.last().cloned().unwrap();
        assert_eq!(
            last.roster_seq, 2,
            "org1's third item: after the roster of org2's new chain"
        );
        let keys = [key().public_key()];
        let mut stored = HashMap::new();
        stored.insert("s".to_owned(), 2);
        let mut r = Vec::new();
        check_roster_tail(std::slice::from_ref(&last), &stored, &keys, "org2", &mut r);
        assert!(r.is_empty(), "{r:?}");
        stored.insert("s".to_owned(), 1);
        check_roster_tail(std::slice::from_ref(&last), &stored, &keys, "org2", &mut r);
        assert!(
            r[0].chain == "org2 @ s"
                && r[0]
                    .failure
                    .as_deref()
                    .is_some_and(|f| f.contains("rosters 2 to 2 of source s are missing")),
            "{r:?}"
        );
        let mut forged = last.clone();
        forged.roster_seq = 9;
        let mut r = Vec::new();
        check_roster_tail(&[forged], &stored, &keys, "org2", &mut r);
        assert!(
            r[0].failure
                .as_deref()
                .is_some_and(|f| f.contains("written by hand")),
            "{r:?}"
        );
    }

    #[test]
    fn a_checkpoint_message_keeps_its_fields_apart() {
        let mut a = Checkpoint {
            source_id: "s".into(),
            organization_id: "o\n5".into(),
            chain_seq: 1,
            head_hash: "h".into(),
            commit_lsn: 1,
            item_id: "i".into(),
            commit_time_us: 1,
            key_id: String::new(),
            signature: String::new(),
            format: CHECKPOINT_FORMAT,
            opens_after_us: None,
            signed_from: 1,
            every_items: 3,
            roster_seq: 0,
        };
        let mut b = a.clone();
        b.source_id = "s\no".into();
        b.organization_id = "5".into();
        assert_ne!(a.message(), b.message());
        key().sign(&mut a);
        b.key_id = a.key_id.clone();
        b.signature = a.signature.clone();
        assert!(!key().public_key().verifies(&b));
    }

    #[test]
    fn an_intact_chain_verifies_to_its_last_checkpoint() {
        let (links, cps) = chained(10, Some(key()));
        assert_eq!(cps.len(), 4, "the first item, then every 3 items");
        let r = &verify(links, &cps, &[key().public_key()], Completeness::WHOLE)[0];
        assert_eq!(r.failure, None);
        assert_eq!((r.items, r.verified_seq), (10, 9));
    }

    #[test]
    fn a_stored_item_adopted_leaves_the_chain_as_linking_it_would() {
        let (links, _) = chained(4, None);
        // A restart after item 2: items 3 and 4 are found stored and adopted, item 5 linked after them.
        let mut heads = HashMap::new();
        heads.insert(
            "org1".to_owned(),
            Head {
                seq: 2,
                hash: links[1].fields.chain_hash.clone(),
                ..Default::default()
            },
        );
        let mut c = Chainer::new("s".into(), heads, None, 3, 3600);
        for (i, l) in links.iter().enumerate().skip(2) {
            let r = record(i as u32 + 1, "org1");
            assert_eq!(c.adopt("org1", &r.as_ref(), &l.fields), None);
        }
        let mut all = chained(5, None).0;
        let fifth = c.link("org1", &record(5, "org1"));
        assert_eq!(
            fifth,
            all.pop().unwrap().fields,
            "the chain goes on as if never interrupted"
        );

        // A stored item that does not follow the head, or whose hash is not of its content, is named, and
        // the chain goes on from it as stored.
        let mut c = Chainer::new("s".into(), HashMap::new(), None, 3, 3600);
        let off = c.adopt("org1", &record(2, "org1").as_ref(), &links[1].fields);
        assert!(off.is_some_and(|p| p.contains("where the chain's head was link 0")));
        assert_eq!(c.link("org1", &record(3, "org1")), links[2].fields);
        let mut c = Chainer::new("s".into(), HashMap::new(), None, 3, 3600);
        let altered = c.adopt("org1", &record(9, "org1").as_ref(), &links[0].fields);
        assert!(altered.is_some_and(|p| p.contains("not the hash of its stored content")));
        let unchained = c.adopt("org1", &record(2, "org1").as_ref(), &ChainFields::default());
        assert!(unchained.is_some_and(|p| p.contains("outside the chain")));
        assert_eq!(c.link("org1", &record(2, "org1")), links[1].fields);
    }

    #[test]
    fn lines_appended_after_a_torn_one_stay_whole() {
        let path =
            std::env::temp_dir().join(format!("waltrail-torn-{}.ndjson", std::process::id()));
        std::fs::write(&path, "{\"checkpoint\":1}\n{\"checkpo").unwrap();
        append_checkpoint_lines(&path, "{\"checkpoint\":2}\n").unwrap();
        append_checkpoint_lines(&path, "{\"checkpoint\":3}\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                r#"{"checkpoint":1}"#,
                r#"{"checkpo"#,
                r#"{"checkpoint":2}"#,
                r#"{"checkpoint":3}"#
            ]
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_platform_chain_held_in_part_is_checked_where_its_items_are() {
        // The platform chain: a platform-wide item, one of no organization (which no organization's
        // export carries), another platform-wide one.
        let mut c = Chainer::new("s".into(), HashMap::new(), None, 1000, 3600);
        let mut links = Vec::new();
        for (i, wide) in [(1, 1), (2, 0), (3, 1)] {
            let mut r = record(i, "");
            r.platform_wide = wide;
            let f = c.link("", &r);
            links.push(Link::of(&r, f));
        }
        links.remove(1);
        let whole_orgs = Completeness {
            platform: false,
            ..Completeness::WHOLE
        };
        let r = &verify(links.clone(), &[], &[], whole_orgs)[0];
        assert_eq!(r.chain, "(platform) @ s");
        assert_eq!((r.items, r.failure.as_deref()), (2, None), "{r:?}");
        // Not proven whole: the missing position is counted, never passed over.
        assert_eq!(r.unjudged, 1, "{r:?}");
        let r = &verify(links, &[], &[], Completeness::WHOLE)[0];
        assert!(
            r.failure
                .as_deref()
                .unwrap_or("")
                .contains("items were deleted"),
            "{r:?}"
        );
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        let keys = [key().public_key()];
        let (links, cps) = chained(10, Some(key()));
        let fails = |links: Vec<Link>, cps: &[Checkpoint]| {
            verify(links, cps, &keys, Completeness::WHOLE)[0]
                .failure
                .clone()
                .unwrap_or_default()
        };
        let mut altered = links.clone();
        altered[4].content = record(99, "org1").content_hash();
        assert!(fails(altered, &cps).contains("altered"));
        let mut deleted = links.clone();
        deleted.remove(4);
        assert!(fails(deleted, &cps).contains("deleted"));
        let mut inserted = links.clone();
        let extra = Link::of(
            &record(50, "org1"),
            ChainFields {
                chain_seq: 5,
                ..links[4].fields.clone()
            },
        );
        inserted.push(extra);
        assert!(!fails(inserted, &cps).is_empty());
        let mut reordered = links.clone();
        let (a, b) = (reordered[3].fields.chain_seq, reordered[4].fields.chain_seq);
        reordered[3].fields.chain_seq = b;
        reordered[4].fields.chain_seq = a;
        assert!(!fails(reordered, &cps).is_empty());
        let mut forged = cps.clone();
        forged[2].head_hash = links[2].fields.chain_hash.clone();
        assert!(fails(links.clone(), &forged).contains("forged"));
        let cut: Vec<Link> = links[..7].to_vec();
        assert!(fails(cut.clone(), &cps).contains("tail was cut"));
        // Where the links are not said to be whole, the cut tail is not judged, and counted as such.
        let held_in_part = Completeness {
            organizations: false,
            platform: false,
            since_us: None,
        };
        let last_checkpoint = cps.iter().map(|c| c.chain_seq).max().unwrap();
        let r = &verify(cut, &cps, &keys, held_in_part)[0];
        assert_eq!(r.failure, None);
        assert_eq!(r.unjudged, last_checkpoint - 7, "{r:?}");
        let other = SigningKey::from_seed(&[9u8; 32]).unwrap();
        assert!(
            verify(links, &cps, &[other.public_key()], Completeness::WHOLE)[0]
                .failure
                .as_deref()
                .unwrap()
                .contains("not a trusted key")
        );
    }

    #[test]
    fn the_encoding_is_stable_and_numbers_are_decimal() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
        assert_eq!(decimal_i64(-5, &mut b), b"-5");
        assert_eq!(decimal_i64(i64::MIN, &mut b), b"-9223372036854775808");
        // Pinned: a change of the encoding must come with a new version name, never silently.
        let r = record(1, "org1");
        assert_eq!(
            hex(&r.content_hash()),
            "62c2c90d41c0f67148ccf5d7004aeb31b20db5abe628bf917fc1c2e8edfb7daf"
        );
        let full = Record {
            event_id: "e".into(),
            occurred_at_us: -1_234_567,
            xid: 7,
            seq: 3,
            action: "AUDIT_ACTION_UPDATED".into(),
            display_name: "Zoë \u{1F600}".into(),
            changed_fields: vec!["name".into(), "config".into()],
            diff: r#"{"name":{"before":"a","after":"b"}}"#.into(),
            platform_wide: 1,
            ..record(2, "org2")
        };
        assert_eq!(
            hex(&full.content_hash()),
            "1853112cd1f60c04c53da3289d683c960650360247613353a6ddf0032d792b1c"
        );
        let mut other = r.clone();
        other.changed_fields = vec!["a".into()];
        assert_ne!(r.content_hash(), other.content_hash());
        let mut moved = r.clone();
        moved.summary.push(' ');
        assert_ne!(r.content_hash(), moved.content_hash());
    }

    #[test]
    fn keys_round_trip_and_ids_follow_the_key() {
        let k = key().public_key();
        let parsed = PublicKey::parse(&k.to_text()).unwrap();
        assert_eq!(parsed, k);
        assert!(PublicKey::parse("ed25519:abcd").is_err());
        assert_eq!(
            PublicKey::parse(&format!("{}  # key id {}", k.to_text(), k.key_id)).unwrap(),
            k,
            "the line `waltrail keys` prints parses as it is"
        );
        assert_ne!(
            SigningKey::from_seed(&[1u8; 32]).unwrap().key_id,
            key().key_id
        );
        let export = PublicKey::parse(&format!("export:{}", k.to_text())).unwrap();
        assert!(export.exports_only && export.key_id == k.key_id);
        assert_eq!(PublicKey::parse(&export.to_text()).unwrap(), export);
    }

    /// A key that signs exports only (API replicas hold it) verifies exports, never a checkpoint: holding
    /// it must not let anyone sign the trail's checkpoints.
    #[test]
    fn an_export_only_key_verifies_exports_and_no_checkpoint() {
        let exporter = SigningKey::from_seed(&[3u8; 32]).unwrap();
        let as_export_key = PublicKey {
            exports_only: true,
            ..exporter.public_key()
        };
        let checkpoint_key = key().public_key();
        // An export signed with it verifies with it (and the chains' checkpoints with the checkpoint key).
        let lines = export_of(Some(&exporter), |_, _| true, 0);
        let keys = [checkpoint_key.clone(), as_export_key.clone()];
        let v = verify_lines(&lines, &keys);
        assert_eq!(first_failure(&v), "", "{v:#?}");
        assert!(v.sealed.is_some() && v.exports_only);
        // ...but only as far as the checkpoints reach (at 3 and 6 of each 7-item chain): what follows
        // could be anyone's who holds that key.
        assert!(v.reports.iter().all(|r| r.unjudged == 1), "{v:#?}");
        // Its holder drops the checkpoint lines and signs again: nothing is proven, nothing passes whole.
        let no_checkpoints: Vec<String> = lines
            .iter()
            .filter(|l| l.contains(r#""record":"#))
            .cloned()
            .collect();
        let mut digest = ExportDigest::default();
        no_checkpoints.iter().for_each(|l| digest.add(l));
        let mut info = ExportInfo {
            complete: true,
            platform_complete: Some(true),
            seal: None,
        };
        info.seal(&exporter, "org1", "", (0, 0), &digest);
        let mut forged = no_checkpoints;
        forged.push(serde_json::json!({ "export": info }).to_string());
        let v = verify_lines(&forged, &keys);
        assert!(v.reports.iter().all(|r| r.unjudged == r.items), "{v:#?}");
        // A checkpoint signed with it is not trusted, whatever else the key file says of it.
        let (links, cps) = chained(6, Some(exporter));
        let r = &verify(links, &cps, &[as_export_key], Completeness::WHOLE)[0];
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("not a trusted key")),
            "{r:?}"
        );
    }
}

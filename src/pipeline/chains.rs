//! The chains as a start finds them in the store: their heads as of where streaming resumes, and whether
//! signing on from them would vouch for a trail that is not as capture signed it.

use anyhow::anyhow;

use super::retry::Failure;
use super::{refuse_gap, signing_key};
use crate::audit::chain::Chainer;
use crate::capture::Lsn;
use crate::config::{Config, Signing};

/// What a start links on from.
pub(super) struct Resumed {
    /// `None` when the chain is off (`integrity.chain = false`).
    pub chainer: Option<Chainer>,
    /// The trail goes on unsigned from checkpoints stored before, not yet said in the trail.
    pub signing_gap: bool,
    /// Where the trail last records checkpoint signing turned off.
    pub signing_off_at: Option<u64>,
}

pub(super) async fn resume(
    cfg: &Config,
    ch: &clickhouse::Client,
    source_id: &str,
    start: Lsn,
    accept_gap: bool,
) -> Result<Resumed, Failure> {
    let mut signing_gap = false;
    if !cfg.integrity.chain {
        return Ok(Resumed {
            chainer: None,
            signing_gap,
            signing_off_at: None,
        });
    }
    // The chains' heads as of where streaming resumes: a replay links the same items the same way.
    let keys = crate::audit::chain::configured_keys(cfg)
        .map(|(_, keys)| keys)
        .map_err(|e| Failure::Fatal(anyhow!("integrity: {e}")))?;
    // Where the trail last records checkpoint signing turned off (read once for the start).
    let signing_off_at = crate::store::query::last_signing_gap_lsn(ch, source_id, start.0)
        .await
        .map_err(Failure::Retry)?;
    let retained_from = crate::store::query::retained_since_us(cfg.retention.days);
    let mut heads = crate::store::query::chain_heads(ch, source_id, start.0, &keys, retained_from)
        .await
        .map_err(Failure::Retry)?;
    // No chain grows past 2^48 items (a million a second for nine years): a head beyond is a row
    // written into the store, and linking on from it would wrap positions (outside verification).
    if let Some((chain, h)) = heads.iter().find(|(_, h)| h.seq > 1 << 48) {
        return Err(Failure::Fatal(anyhow!(
            "the store holds chain position {} for chain {:?} of this source, which capture never wrote: \
             rows were written into audit_items by hand. waltrail verify names them; remove them (or \
             restore the store) before capture goes on",
            h.seq,
            chain
        )));
    }
    let key = signing_key(cfg).map_err(Failure::Fatal)?;
    // Signing on from a stored chain vouches for it: one that does not look like what capture
    // signed (checkpoints deleted, maybe over items altered and linked again; items deleted from
    // its tail) is refused, as is going on unsigned where the trail was signed.
    let mut doubts: Vec<String> = heads
        .iter()
        .filter_map(|(chain, h)| {
            h.doubt(cfg.integrity.checkpoint_every_items).map(|d| {
                format!(
                    "chain {}: {d}",
                    crate::audit::chain::chain_key(source_id, chain)
                )
            })
        })
        .collect();
    doubts.sort();
    let unsigned = cfg.integrity.signing == Signing::Off;
    // Without a key nothing is signed, so nothing is vouched for: a doubt is logged and said again
    // when signing is turned back on (that start refuses it like any other).
    if !doubts.is_empty() && unsigned {
        // Chains whose last checkpoint precedes the record that signing stopped were not signed
        // since, not stripped of checkpoints: said as such (an ERROR at every start that reads
        // "deleted" would teach the on-call engineer to ignore the real one).
        let off_before = |h: &crate::audit::chain::Head| {
            signing_off_at.is_some_and(|off| h.stored_checkpoint_lsn() < off)
        };
        if heads
            .values()
            .filter(|h| h.doubt(cfg.integrity.checkpoint_every_items).is_some())
            .all(off_before)
        {
            tracing::info!(chains = doubts.len(), "chains gained items since checkpoint signing was turned off, as the trail records: not signed (integrity.signing = \"off\"); the start that signs again signs them as they stand");
        } else {
            tracing::error!(doubts = %doubts.join("; "), "the stored trail is not as capture signed it; going on unsigned (integrity.signing = \"off\"): verify it, and expect the start that signs again to refuse until it is settled");
        }
    } else if !doubts.is_empty() {
        let signing_was_off = signing_off_at
            .is_some_and(|off| heads.values().all(|h| h.stored_checkpoint_lsn() < off));
        refuse_gap(accept_gap, || {
            format!(
                "the stored trail of source {source_id} is not as capture signed it: {}. {}Verify it \
                 (waltrail verify --config … --org …, with --checkpoints FILE if you keep a copy) and \
                 restore the store if you can; to sign on from it as it is, run once with --accept-gap \
                 (verification keeps naming what is missing)",
                doubts.join("; "),
                if signing_was_off {
                    "The trail records that checkpoint signing was turned off (integrity.signing = \
                     \"off\") after these chains' last checkpoints: if you did, checkpoints due since were \
                     not signed rather than deleted (a record written into the store would say the same). "
                } else {
                    ""
                }
            )
        })?;
        tracing::error!(doubts = %doubts.join("; "), "signing on from a stored trail that is not as capture signed it (--accept-gap)");
        heads
            .values_mut()
            .filter(|h| h.doubt(cfg.integrity.checkpoint_every_items).is_some())
            .for_each(|h| h.accept_doubt());
    }
    if key.is_none() && heads.values().any(|h| h.checkpointed_seq > 0) {
        // Without the keys it was signed with, verification would report every checkpoint of the
        // signed history as signed by an untrusted key.
        if unsigned && keys.is_empty() {
            return Err(Failure::Fatal(anyhow!(
                "integrity.signing = \"off\" over a trail that was signed (the store holds checkpoints of \
                 source {source_id}), but integrity.trusted_keys is empty: keep the public key(s) it was \
                 signed with there (waltrail keys --config … printed them while the key was configured: \
                 \"ed25519:…\"), or verification reports every one of those checkpoints as signed by an \
                 untrusted key"
            )));
        }
        if unsigned {
            let (_, signers) = crate::store::query::checkpoint_keys(ch, source_id)
                .await
                .map_err(Failure::Retry)?;
            let untrusted: Vec<&str> = signers
                .iter()
                .map(String::as_str)
                .filter(|id| !keys.iter().any(|k| k.key_id == *id && !k.exports_only))
                .collect();
            if !untrusted.is_empty() {
                return Err(Failure::Fatal(anyhow!(
                    "integrity.signing = \"off\", but checkpoints of source {source_id} in the store are \
                     signed with key(s) {} that integrity.trusted_keys does not hold: add their public keys \
                     (\"ed25519:…\", as waltrail keys printed them), or verification reports them as \
                     signed by an untrusted key",
                    untrusted.join(", ")
                )));
            }
        }
        if unsigned {
            let newest = heads
                .values()
                .map(|h| h.stored_checkpoint_lsn())
                .max()
                .unwrap_or(0);
            let recorded = signing_off_at.is_some_and(|off| off > newest);
            if !recorded {
                signing_gap = true;
            }
            tracing::warn!("checkpoint signing is off (integrity.signing = \"off\") for a trail signed before: what is captured now is covered by no checkpoint");
        } else {
            refuse_gap(accept_gap, || {
                format!(
                    "source {source_id}'s trail is signed (the store holds its checkpoints) but no signing key \
                     is configured: set integrity.signing_key_file or WALTRAIL_SIGNING_KEY. To go on unsigned \
                     on purpose, set integrity.signing = \"off\" (the moment signing stopped is recorded in \
                     the trail)"
                )
            })?;
            tracing::error!("going on unsigned where the trail was signed (--accept-gap): what is captured now is covered by no checkpoint");
        }
    }
    let mut last_roster = crate::store::query::last_roster(ch, source_id, start.0)
        .await
        .map_err(Failure::Retry)?;
    // Rosters cut from the sequence's tail: a signed checkpoint names one the store lacks. Numbering
    // on from what is left would hide it.
    let claim = crate::store::query::source_roster_claim(ch, source_id, start.0)
        .await
        .map_err(Failure::Retry)?
        .filter(|c| keys.iter().any(|k| k.verifies(c)));
    if let Some(c) = claim.filter(|c| c.roster_seq > last_roster.map_or(0, |(s, _)| s)) {
        refuse_gap(accept_gap, || {
            format!(
                "source {source_id}'s rosters end at {} in the store, but its signed checkpoint (chain \
                 position {} of {}) names roster {}: rosters were removed (and with them, perhaps, whole \
                 chains). Verify the trail and restore the store if you can; to go on, run once with \
                 --accept-gap (numbering goes on after the missing ones)",
                last_roster.map_or(0, |(s, _)| s),
                c.chain_seq,
                crate::audit::chain::chain_key(source_id, &c.organization_id),
                c.roster_seq
            )
        })?;
        last_roster = Some((c.roster_seq, c.commit_time_us));
    }
    let chainer = Some(
        Chainer::new(
            source_id.to_owned(),
            heads,
            key,
            cfg.integrity.checkpoint_every_items,
            cfg.integrity.checkpoint_every_s,
        )
        .with_roster(last_roster)
        .with_retention_days(cfg.retention.days),
    );
    Ok(Resumed {
        chainer,
        signing_gap,
        signing_off_at,
    })
}

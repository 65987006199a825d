//! Verifying the stored trail: an organization's hash chain and its platform chain, read from ClickHouse
//! in chain order, checked against the signed checkpoints with the trusted public keys.

use anyhow::Result;

use crate::audit::chain::{self, ChainReport, Link, PublicKey};
use crate::store::query;

/// Verify an organization's chains (its own and the platform chain every organization sees), between
/// commit times when given. Without `until_us` the range runs to the newest item, so a checkpoint beyond
/// the stored chain means its tail was cut.
pub async fn verify_org(
    ch: &clickhouse::Client,
    org: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
    keys: &[PublicKey],
) -> Result<Vec<ChainReport>> {
    verify_org_with(ch, org, since_us, until_us, keys, &[]).await
}

/// As [`verify_org`], also holding the store to copies of checkpoints kept elsewhere (the customer's
/// `integrity.checkpoint_file`): a checkpoint in the copy but not in the store was removed, and the chain
/// must reach every copied checkpoint with its head.
pub async fn verify_org_with(
    ch: &clickhouse::Client,
    org: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
    keys: &[PublicKey],
    external: &[chain::Checkpoint],
) -> Result<Vec<ChainReport>> {
    // A range is verified from the start of its first (UTC) day: there each chain's first item carries a
    // signed opening (see `chain::verify`), so deleting the range's oldest items together with their
    // checkpoints shows. A range starting inside a day could not tell them from the day's earlier items.
    let since_us = since_us.map(|s| s.div_euclid(chain::DAY_US) * chain::DAY_US);
    // Read before the chains: a roster is stored after the items it lists, so one read first never lists
    // items the chains read after it lack.
    let active = query::roster_sources(ch, since_us, until_us).await?;
    let claimed = query::roster_claims(ch, since_us, until_us).await?;
    let rosters = query::rosters(ch, since_us, until_us).await?;
    let stored_max = query::roster_max(ch).await?;
    let signing_gaps = query::signing_gaps_query(ch).fetch_all().await?;
    let mut reports = Vec::new();
    for chain in [org, ""] {
        // Checkpoints before items: capture stores a transaction's items before its checkpoints, so every
        // checkpoint read first covers items the chain read after it holds (read the other way round, one
        // stored in between would lie past the chain's end and read as a cut tail).
        let stored: Vec<chain::Checkpoint> = query::checkpoints(ch, chain)
            .await?
            .iter()
            .map(|c| c.checkpoint())
            .collect();
        let mut rows = query::chain_rows(ch, chain, since_us, until_us).await?;
        // Positions between items the range holds are inside it whatever their commit times say (an
        // upstream clock ahead across midnight, a replication origin's old time): read them too, or an
        // honest store would read as missing them.
        let mut spans: std::collections::BTreeMap<&str, (u64, u64, u64)> = Default::default();
        for r in &rows {
            let e = spans
                .entry(r.source_id.as_str())
                .or_insert((u64::MAX, 0, 0));
            *e = (e.0.min(r.chain_seq), e.1.max(r.chain_seq), e.2 + 1);
        }
        let holed: Vec<(String, u64, u64)> = spans
            .into_iter()
            .filter(|(_, (lo, hi, n))| hi - lo + 1 > *n)
            .map(|(s, (lo, hi, _))| (s.to_owned(), lo, hi))
            .collect();
        for (source, lo, hi) in holed {
            let between = query::chain_rows_between(ch, chain, &source, (lo, hi)).await?;
            rows.retain(|r| r.source_id != source);
            rows.extend(between);
        }
        let links: Vec<Link> = rows
            .iter()
            .map(|r| Link::of(&r.record(), r.chain_fields()))
            .collect();
        let lo = links.iter().map(|l| l.fields.chain_seq).min().unwrap_or(0);
        // Each finding beside the chains' own goes to the line of the chain it is about (source and chain).
        let mut removed: Option<(String, String)> = None;
        let mut checkpoints = stored.clone();
        for e in external.iter().filter(|e| e.organization_id == chain) {
            if !stored.iter().any(|s| s.same_statement(e)) {
                removed.get_or_insert_with(|| {
                    (chain::chain_key(&e.source_id, chain), format!(
                        "the checkpoint at chain position {} ({} @ {}) is in the external copy but not in the store: it was removed or altered",
                        e.chain_seq,
                        if chain.is_empty() { "(platform)" } else { chain },
                        e.source_id
                    ))
                });
                checkpoints.push(e.clone());
            }
        }
        // A range is judged by the checkpoints committed inside it (by time, each source's chain alike): one
        // committed after its end covers items beyond it, one committed before its start says nothing of
        // items retention or the range left out (`Completeness::since_us`), while one inside it below a
        // chain's first stored item, or past its last, shows items removed. Without a start, positions
        // below the first item are not judged.
        checkpoints.retain(|c| {
            until_us.is_none_or(|u| c.commit_time_us < u)
                && (since_us.is_some() || c.chain_seq >= lo)
        });
        let unchained = query::first_unchained(ch, chain, since_us, until_us)
            .await?
            .map(|id| {
                // Which source's chain it sits in is what it lacks: the first line carries it.
                (String::new(), format!(
                    "item {id} carries no chain fields: it was inserted into the store (or stored while integrity.chain was off), and cannot be verified"
                ))
            });
        if links.is_empty() && checkpoints.is_empty() && unchained.is_none() {
            continue;
        }
        let whole = chain::Completeness {
            since_us,
            ..chain::Completeness::WHOLE
        };
        let mut r = chain::verify_knowing(links, &checkpoints, keys, whole, &signing_gaps);
        if r.is_empty() {
            r.push(ChainReport {
                chain: chain::chain_key("", chain),
                ..Default::default()
            });
        }
        for (key, m) in [removed, unchained].into_iter().flatten() {
            let at = match r.iter().position(|x| x.chain == key) {
                Some(i) => i,
                None if key.is_empty() => 0,
                // A chain with nothing left to verify in the range: a line of its own.
                None => {
                    r.push(ChainReport {
                        chain: key,
                        ..Default::default()
                    });
                    r.len() - 1
                }
            };
            if r[at].failure.is_none() {
                r[at].failure = Some(m);
            }
        }
        reports.extend(r);
    }
    chain::check_rosters(&rosters, &active, keys, org, since_us, &mut reports);
    if keys.iter().any(|k| !k.exports_only) {
        chain::check_roster_tail(&claimed, &stored_max, keys, org, &mut reports);
    }
    Ok(reports)
}

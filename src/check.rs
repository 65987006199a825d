//! `waltrail check`: every layer's findings, printed with their fixes.

use crate::config::{Config, Signing};
use crate::finding::{Finding, Status};

/// Ask each layer what it needs and whether it has it.
pub async fn run(cfg: &Config) -> Vec<Finding> {
    let mut findings = crate::capture::check::postgres(cfg).await;
    findings.extend(mapping(cfg).await);
    findings.extend(attribution_columns(cfg).await);
    findings.extend(crate::store::check::clickhouse(&cfg.clickhouse).await);
    findings.extend(slot_moved(cfg).await);
    findings.extend(redaction_changed(cfg).await);
    findings.extend(redaction_ahead(cfg).await);
    findings.push(integrity(cfg));
    findings.extend(signing_over_store(cfg).await);
    if let Some(f) = &cfg.event_secret_to_create {
        findings.push(Finding::ok(format!(
            "event secret file {f} does not exist yet: run creates it (mode 0600); every waltrail process of \
             this deployment needs the same one"
        )));
    }
    if let Some(f) = &cfg.integrity.checkpoint_file {
        findings.push(match crate::audit::chain::checkpoint_file_writable(f) {
            Ok(()) if cfg.integrity.signing == Signing::Off => Finding::warn(
                format!("integrity.checkpoint_file {f} is set, but signing is off: nothing is appended to it"),
                "remove integrity.checkpoint_file, or sign (integrity.signing)",
            ),
            Ok(()) => Finding::ok(format!("checkpoints also appended to {f}")),
            Err(e) => Finding::fail(e, "fix integrity.checkpoint_file"),
        });
    }
    findings
}

/// What the mapping rules make of the tables as the catalog has them: derived actions that can never fire,
/// redacted columns that redact nothing. Nothing when Postgres or a table cannot be read (capture's findings
/// say so).
async fn mapping(cfg: &Config) -> Vec<Finding> {
    let Ok(client) = crate::pg::connect(cfg).await else {
        return Vec::new();
    };
    let names = cfg.table_names();
    let Ok(infos) = crate::capture::catalog::tables(&client, &names).await else {
        return Vec::new();
    };
    let mut out: Vec<Finding> = cfg
        .tables
        .iter()
        .zip(&infos)
        .filter(|(_, i)| i.exists)
        .flat_map(|(t, i)| {
            crate::audit::mapping::derived_action_mismatches(t, i)
                .into_iter()
                .chain(crate::audit::mapping::unscoped_table(t))
        })
        .map(|(what, fix)| Finding::warn(what, fix))
        .collect();
    out.extend(
        crate::audit::mapping::nestable_redaction_gaps(&cfg.tables, &infos)
            .into_iter()
            .map(|(what, fix)| Finding::warn(what, fix)),
    );
    // Which redacted columns were dropped (by column number, as the last start remembered them), which run
    // tells from misspelt or renamed ones.
    let baseline = if cfg.tables.iter().any(|t| !t.redact_columns.is_empty()) {
        remembered_baseline(cfg, &client).await
    } else {
        None
    };
    for (t, i) in cfg.tables.iter().zip(&infos).filter(|(_, i)| i.exists) {
        let missing = crate::audit::mapping::missing_redacted(t, i);
        if missing.is_empty() {
            continue;
        }
        let dropped = baseline.as_ref().map_or_else(Vec::new, |b| b.dropped(t, i));
        if !dropped.is_empty() {
            out.push(Finding::warn(
                format!(
                    "table {}: redacted column(s) {} dropped (their column numbers are gone, as remembered in \
                     ClickHouse){}",
                    t.table,
                    dropped.join(", "),
                    if missing.len() == t.redact_columns.len() {
                        ": nothing of the table is a secret any more"
                    } else {
                        ""
                    }
                ),
                "keep them in redact_columns and optional_columns while older changes in the slot may carry them",
            ));
        }
        let missing: Vec<String> = missing
            .into_iter()
            .filter(|c| !dropped.contains(c))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let all = missing.len() == t.redact_columns.len();
        let what = format!(
            "table {}: redacted column(s) {} not in it{}",
            t.table,
            missing.join(", "),
            if all {
                ": nothing of it is redacted"
            } else {
                ""
            }
        );
        out.push(if all {
            Finding::fail(
                what,
                "name the secret column(s) as they are now in redact_columns: run refuses the table until then (if \
                 the secret column was dropped before any start remembered it, `waltrail run --accept-columns` \
                 takes the table as it is, once)",
            )
        } else {
            Finding::warn(
                what,
                "fine while it is the other name of a rename in progress (optional_columns); otherwise check its \
                 spelling: a misspelt redacted column leaves the secret in clear",
            )
        });
    }
    out
}

/// A slot past every position capture reported it may confirm: moved by something else while waltrail was
/// away, which `run` refuses (see `capture::provision::ensure_slot`). Nothing when either side cannot be read
/// (their own findings say so). Read in this order, a running capture never looks moved: its bound is
/// reported before it confirms.
async fn slot_moved(cfg: &Config) -> Option<Finding> {
    let client = crate::pg::connect(cfg).await.ok()?;
    let slot = &cfg.postgres.slot;
    let confirmed = crate::capture::catalog::slot_info(&client, slot)
        .await
        .ok()??
        .confirmed_flush?;
    let source_id = source_id(cfg, &client).await?;
    let ch = crate::store::client(&cfg.clickhouse);
    let bound = crate::store::sources::confirm_bound(&ch, &source_id)
        .await
        .ok()?;
    (bound > 0 && confirmed.0 > bound).then(|| {
        Finding::fail(
            format!("slot {slot} is past every position waltrail confirmed: the trail has a gap"),
            crate::capture::provision::moved_slot_message(slot, bound, confirmed),
        )
    })
}

/// The source id capture reports under: configured, else as capture names it (system identifier,
/// database, slot).
async fn source_id(cfg: &Config, client: &tokio_postgres::Client) -> Option<String> {
    if let Some(s) = &cfg.capture.source_id {
        return Some(s.clone());
    }
    let system: String = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .ok()?
        .try_get(0)
        .ok()?;
    Some(format!(
        "{system}/{}/{}",
        crate::pg::params(cfg).ok()?.dbname,
        cfg.postgres.slot
    ))
}

/// What `run` refuses, or verification would fail, given the checkpoints the store holds of this source:
/// no key where the trail was signed (unless signing is off on purpose), and keys that signed them that
/// are no longer trusted. Nothing when Postgres or the store cannot be read (their findings say so).
async fn signing_over_store(cfg: &Config) -> Option<Finding> {
    let (key, trusted) = crate::audit::chain::configured_keys(cfg).ok()?;
    let client = crate::pg::connect(cfg).await.ok()?;
    let source_id = source_id(cfg, &client).await?;
    let ch = crate::store::client(&cfg.clickhouse);
    let (n, key_ids) = crate::store::query::checkpoint_keys(&ch, &source_id)
        .await
        .ok()?;
    if n == 0 {
        return None;
    }
    if key.is_none() && cfg.integrity.signing != Signing::Off {
        return Some(Finding::fail(
            format!("the store holds {n} checkpoints of source {source_id}, but no signing key is configured: run refuses to go on unsigned"),
            "configure the key (integrity.signing_key_file or WALTRAIL_SIGNING_KEY), or set integrity.signing = \"off\" to go on unsigned on purpose (keeping its public key in integrity.trusted_keys)",
        ));
    }
    let untrusted: Vec<&String> = key_ids
        .iter()
        .filter(|id| !trusted.iter().any(|k| &k.key_id == *id && !k.exports_only))
        .collect();
    (!untrusted.is_empty()).then(|| {
        Finding::fail(
            format!(
                "checkpoints of source {source_id} in the store are signed with key(s) {} that no configured key \
                 trusts: verification reports them as failed{}",
                untrusted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                if key.is_none() { ", and run refuses" } else { ", and run refuses them as written by hand" }
            ),
            "put the public keys they were signed with (ed25519:…, as waltrail keys printed them) in integrity.trusted_keys",
        )
    })
}

/// The key capture seals its redaction baseline with; `None` while the event secret file is still to be
/// created (no start has sealed anything with it).
fn seal_key(cfg: &Config) -> Option<crate::audit::attribution::seal::SealKey> {
    cfg.event_secret_to_create
        .is_none()
        .then(|| crate::audit::attribution::seal::SealKey::new(cfg.event_secret.0.as_bytes()))
}

/// The redaction baseline the last start stored; `None` when there is none or it cannot be read.
async fn remembered_baseline(
    cfg: &Config,
    client: &tokio_postgres::Client,
) -> Option<crate::audit::redaction::Baseline> {
    let source_id = source_id(cfg, client).await?;
    let ch = crate::store::client(&cfg.clickhouse);
    let stored = crate::store::sources::redaction_baseline(&ch, &source_id)
        .await
        .ok()??;
    crate::audit::redaction::Baseline::parse(&stored, &source_id, seal_key(cfg).as_ref()).ok()
}

/// A redacted column renamed (or dropped for a new one) since capture last started, which `run` refuses
/// (see `audit::redaction`). Nothing when Postgres or the store cannot be read (their findings say so).
async fn redaction_changed(cfg: &Config) -> Option<Finding> {
    let client = crate::pg::connect(cfg).await.ok()?;
    let source_id = source_id(cfg, &client).await?;
    let ch = crate::store::client(&cfg.clickhouse);
    let stored = crate::store::sources::redaction_baseline(&ch, &source_id)
        .await
        .ok()??;
    let names = cfg.table_names();
    let infos = crate::capture::catalog::tables(&client, &names)
        .await
        .ok()?;
    let changed =
        match crate::audit::redaction::Baseline::parse(&stored, &source_id, seal_key(cfg).as_ref())
        {
            Ok(was) => was.changed_since(&cfg.tables, &infos),
            Err(e) => vec![e],
        };
    (!changed.is_empty()).then(|| {
        Finding::fail(
            "a redacted column changed since capture last started: run refuses until the config says what it is now",
            changed.join("; "),
        )
    })
}

/// What capture will meet in the slot: each redacted table's Relations still to be streamed, held to the
/// table's columns now as the running watchdog holds them (see `pipeline::read`), so a stop still ahead
/// in the stream is said before capture is started into it. Nothing when the slot or the tables cannot be
/// read (other findings say so) or the slot is in use (the running capture checks each Relation itself).
async fn redaction_ahead(cfg: &Config) -> Option<Finding> {
    use crate::capture::{catalog, peek, pgoutput};
    if cfg.tables.iter().all(|t| t.redact_columns.is_empty()) {
        return None;
    }
    let client = crate::pg::connect(cfg).await.ok()?;
    let slot = &cfg.postgres.slot;
    let info = catalog::slot_info(&client, slot).await.ok()??;
    if info.active_pid.is_some() {
        return None;
    }
    let infos = catalog::tables(&client, &cfg.table_names()).await.ok()?;
    let mut of: std::collections::HashMap<u32, &crate::config::TableConfig> = cfg
        .tables
        .iter()
        .zip(&infos)
        .filter(|(t, i)| i.exists && !t.redact_columns.is_empty())
        .map(|(t, i)| (i.oid, t))
        .collect();
    let roots: Vec<u32> = of.keys().copied().collect();
    for (child, root) in catalog::partitions_of(&client, &roots).await.ok()? {
        if let Some(t) = of.get(&root).copied() {
            of.insert(child, t);
        }
    }
    let oids: Vec<u32> = of.keys().copied().collect();
    let mut relations = Vec::new();
    let read = peek::changes(
        &client,
        (slot, &cfg.postgres.publication),
        &oids,
        (peek::Messages::Relations, cfg.attribution.rewind_max_bytes),
        |b| {
            if let Ok(pgoutput::LogicalMessage::Relation(r)) = pgoutput::decode(b) {
                relations.push(r);
            }
            Ok(())
        },
    )
    .await;
    match read {
        Ok(true) => {}
        Ok(false) => {
            return Some(Finding::warn(
                format!(
                    "slot {slot} holds more WAL than attribution.rewind_max_bytes: the redacted tables' columns \
                     still in it were not looked at"
                ),
                "capture checks each as it arrives (and stops on a doubt, with the fix)",
            ))
        }
        Err(e) => {
            return Some(Finding::warn(
                format!("the redacted tables' columns still in slot {slot} could not be read: {e:#}"),
                "capture checks each as it arrives (and stops on a doubt, with the fix)",
            ))
        }
    }
    let mut whats = Vec::new();
    let mut names = Vec::new();
    for rel in &relations {
        let Some(t) = of.get(&rel.id) else { continue };
        let Ok(numbered) = catalog::numbered_columns(&client, rel.id).await else {
            continue;
        };
        let shown: Vec<(&str, u32)> = rel
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid))
            .collect();
        if let Some((what, n)) = crate::audit::redaction::relation_doubt(t, &shown, &numbered) {
            if !whats.contains(&what) {
                whats.push(what);
            }
            for n in n {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    (!whats.is_empty()).then(|| {
        Finding::fail(
            format!(
                "changes still in slot {slot} name a redacted table's columns otherwise than now: capture will \
                 stop there ({})",
                whats.join("; ")
            ),
            crate::audit::redaction::relation_doubt_fix(&names),
        )
    })
}

/// The [attribution] tables' configured columns, as `run` loads them: a name a table lacks fails here, not
/// at run's start. Tables that do not exist are capture's finding; nothing when Postgres cannot be read.
async fn attribution_columns(cfg: &Config) -> Vec<Finding> {
    let Ok(client) = crate::pg::connect(cfg).await else {
        return Vec::new();
    };
    let requests = crate::audit::attribution::PlatformTables::new(cfg).snapshot_requests();
    let names: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.schema.clone(), r.table.clone()))
        .collect();
    let Ok(infos) = crate::capture::catalog::tables(&client, &names).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (r, i) in requests.iter().zip(&infos).filter(|(_, i)| i.exists) {
        let missing: Vec<&str> = r
            .columns
            .iter()
            .filter(|c| !i.columns.contains(c))
            .map(String::as_str)
            .collect();
        out.push(if missing.is_empty() {
            Finding::ok(format!(
                "attribution table {}.{} has the configured columns",
                r.schema, r.table
            ))
        } else {
            Finding::fail(
                format!(
                    "attribution table {}.{} has no column(s) {}",
                    r.schema,
                    r.table,
                    missing.join(", ")
                ),
                "fix the column names in its [attribution] section: run refuses to start until then",
            )
        });
    }
    out
}

/// Whether the trail can be proven unaltered: the chain needs nothing; checkpoints need a signing key.
fn integrity(cfg: &Config) -> Finding {
    if !cfg.integrity.chain {
        return Finding::warn(
            "hash chain off (integrity.chain = false): alterations of the stored trail cannot be detected",
            "remove integrity.chain = false",
        );
    }
    let exports = match crate::audit::chain::export_key(cfg) {
        Ok(Some(k)) if cfg.integrity.export_signing_key.is_some() => {
            format!("; exports signed with export-only key {}", k.key_id)
        }
        Ok(Some(_)) => "; exports signed with the same key".to_owned(),
        Ok(None) => "; exports unsigned (verify --export cannot prove them whole)".to_owned(),
        Err(e) => {
            return Finding::fail(
                format!("integrity: {e}"),
                "fix integrity.export_signing_key_file",
            )
        }
    };
    let signing = cfg.integrity.signing;
    match crate::audit::chain::configured_keys(cfg) {
        Ok((Some(_), _)) if signing == Signing::Off => Finding::fail(
            "integrity.signing = \"off\" but a signing key is configured: run refuses to start",
            "remove the key to go on unsigned, or the setting to sign",
        ),
        Ok((None, _)) if signing == Signing::Required => Finding::fail(
            "integrity.signing = \"required\" but no signing key is configured: run refuses to start",
            "waltrail keygen --out /etc/waltrail/signing.key, then integrity.signing_key_file (or WALTRAIL_SIGNING_KEY)",
        ),
        Ok((None, _)) if signing == Signing::Off => Finding::warn(
            "hash chain on; checkpoints off on purpose (integrity.signing = \"off\"): a rewrite of the whole chain cannot be told",
            "to sign: waltrail keygen --out FILE, integrity.signing_key_file, and remove integrity.signing",
        ),
        Ok((Some(k), keys)) => Finding::ok(format!(
            "hash chain on; checkpoints signed with key {} ({} trusted key(s); waltrail keys prints them){exports}",
            k.key_id,
            keys.len()
        )),
        Ok((None, _)) => Finding::warn(
            "hash chain on; checkpoints off: no signing key, so a rewrite of the whole chain cannot be told",
            "waltrail keygen --out /etc/waltrail/signing.key, then integrity.signing_key_file (or WALTRAIL_SIGNING_KEY)",
        ),
        Err(e) => Finding::fail(format!("integrity: {e}"), "fix integrity.signing_key_file / trusted_keys"),
    }
}

/// One line per finding, the fix indented under it; returns whether any failed.
pub fn print(findings: &[Finding]) -> bool {
    let mut failed = false;
    for f in findings {
        let tag = match f.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => {
                failed = true;
                "FAIL"
            }
        };
        println!("[{tag}] {}", f.what);
        if let Some(fix) = &f.fix {
            println!("       fix: {fix}");
        }
    }
    failed
}

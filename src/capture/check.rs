//! Capture's half of `waltrail check`: everything Postgres must offer before streaming can start, each
//! problem with its fix.

use crate::capture::catalog::{slot_info, table_info};
use crate::capture::provision;
use crate::config::{split_table, Config};
use crate::finding::Finding;
use crate::pg::{error_text, qualified, quote_ident};

/// Slot lag above which `check` warns.
const LAG_WARN_BYTES: i64 = 1 << 30;

/// The Postgres half of the preflight.
pub async fn postgres(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let client = match crate::pg::connect(cfg).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                format!("Postgres reachable: {e:#}"),
                "check postgres.url, that the server runs and that pg_hba.conf lets this host and user in",
            ));
            return out;
        }
    };
    out.push(Finding::ok("Postgres reachable"));
    let one = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.map_err(|e| error_text(&e)) }
    };
    match one("SELECT current_setting('wal_level')").await {
        Ok(r) if r.get::<_, String>(0) == "logical" => out.push(Finding::ok("wal_level = logical")),
        Ok(r) => out.push(Finding::fail(
            format!("wal_level is {}, not logical", r.get::<_, String>(0)),
            "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart Postgres",
        )),
        Err(e) => out.push(Finding::fail(format!("reading wal_level: {e}"), "check the role's privileges")),
    }
    match provision::exposed_context_secret(&client, cfg).await {
        Ok(Some(why)) => out.push(Finding::fail(
            why,
            "move the secret into waltrail.context_key (sql/postgres/waltrail_context.sql) and rotate it",
        )),
        Ok(None) => {}
        Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role's privileges")),
    }
    // The replication connection reads in UTF-8: a SQL_ASCII database may hold bytes no encoding names,
    // and the first such byte in a published row stops capture (Postgres cannot convert it).
    if let Ok(r) = one("SELECT current_setting('server_encoding')").await {
        if r.get::<_, String>(0) == "SQL_ASCII" {
            out.push(Finding::warn(
                "the database's encoding is SQL_ASCII: a byte that is not UTF-8 in a published row stops capture (Postgres error 22021) at that change for good (it is in the WAL as written)",
                "keep published tables' text UTF-8 (or move the database to UTF8)",
            ));
        }
    }
    match one("SELECT current_setting('server_version_num')::int, current_setting('logical_decoding_work_mem')").await {
        Ok(r) if !cfg.postgres.streaming => out.push(Finding::ok(format!(
            "streaming of large transactions off (postgres.streaming): Postgres spills transactions over {} to its own disk and sends them at commit",
            r.get::<_, String>(1)
        ))),
        Ok(r) if r.get::<_, i32>(0) >= 140000 => {
            let dir = cfg
                .capture
                .spill_dir
                .as_ref()
                .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
            match crate::capture::spill::Spill::new(&dir, Default::default()) {
                Ok(_) => out.push(Finding::ok(format!(
                    "large transactions (over logical_decoding_work_mem = {}) streamed while in progress, held encrypted in {}",
                    r.get::<_, String>(1),
                    dir.display()
                ))),
                Err(e) => out.push(Finding::fail(
                    e.to_string(),
                    "set capture.spill_dir to a writable directory, or postgres.streaming = false",
                )),
            }
        }
        Ok(_) => out.push(Finding::ok(
            "Postgres before 14: large transactions are sent at commit (no streaming)",
        )),
        Err(e) => out.push(Finding::warn(format!("reading server_version_num: {e}"), "check the role")),
    }
    match one("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").await
    {
        Ok(r) if r.get::<_, bool>(0) => out.push(Finding::ok("role has REPLICATION")),
        Ok(_) => out.push(Finding::fail(
            "role lacks the REPLICATION attribute",
            "ALTER ROLE <waltrail role> WITH REPLICATION",
        )),
        Err(e) => out.push(Finding::fail(
            format!("reading role attributes: {e}"),
            "check the role",
        )),
    }
    let ddl_prefix = crate::capture::provision::ddl_prefix_literal(&cfg.attribution.message_prefix);
    match client
        .query_one(crate::capture::provision::DDL_EVENTS_INSTALLED, &[&ddl_prefix])
        .await
        .map_err(|e| error_text(&e))
    {
        Ok(r) if r.get::<_, bool>(0) => out.push(Finding::ok(
            "DDL event triggers installed (rewrites, column renames, drops, adds and retypes, and renamed enum labels are recorded)",
        )),
        Ok(_) => out.push(Finding::warn(
            crate::capture::provision::DDL_EVENTS_MISSING,
            crate::capture::provision::DDL_EVENTS_FIX,
        )),
        Err(e) => out.push(Finding::warn(
            format!("reading the event triggers: {e}"),
            "check the role",
        )),
    }
    let slot = slot_info(&client, &cfg.postgres.slot).await;
    match one(
        "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int",
    )
    .await
    {
        Ok(r) => {
            let free: i32 = r.get(0);
            let have_slot = matches!(slot, Ok(Some(_)));
            if free > 0 || have_slot {
                out.push(Finding::ok(format!("replication slots: {free} free")));
            } else {
                out.push(Finding::fail(
                    "no free replication slot",
                    "raise max_replication_slots (restart needed) or drop an unused slot (pg_drop_replication_slot)",
                ));
            }
        }
        Err(e) => out.push(Finding::fail(format!("counting replication slots: {e}"), "check the role")),
    }
    match &slot {
        Ok(Some(s)) => {
            if s.plugin != "pgoutput" {
                out.push(Finding::fail(
                    format!("slot {} uses plugin {}", cfg.postgres.slot, s.plugin),
                    "drop it or configure another postgres.slot",
                ));
            } else if let Some(pid) = s.active_pid {
                out.push(Finding::warn(
                    format!("slot {} is in use by pid {pid}", cfg.postgres.slot),
                    "only one waltrail may read a slot; stop the other one",
                ));
            } else {
                out.push(Finding::ok(format!("slot {} exists", cfg.postgres.slot)));
            }
            out.extend(slot_findings(&client, &cfg.postgres.slot, s.confirmed_flush).await);
        }
        Ok(None) => out.push(Finding::warn(
            format!("slot {} does not exist yet", cfg.postgres.slot),
            if cfg.postgres.create_slot {
                "waltrail run creates it"
            } else {
                "create it: SELECT pg_create_logical_replication_slot(<slot name as a string literal>, 'pgoutput')"
            },
        )),
        Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role")),
    }
    for t in &cfg.tables {
        let (schema, table) = split_table(&t.table);
        let name = format!("{schema}.{table}");
        match table_info(&client, schema, table).await {
            Ok(i) if !i.exists => out.push(Finding::fail(
                format!(
                    "table {name} does not exist{}",
                    crate::config::dotted_hint(schema, table)
                ),
                "fix the [[tables]] entry or create the table",
            )),
            Ok(i) => {
                if i.primary_key.is_empty() && t.id_columns.is_empty() {
                    out.push(Finding::fail(
                        format!("table {name} has no primary key"),
                        "add a primary key, or set id_columns for it",
                    ));
                } else {
                    out.push(Finding::ok(format!("table {name} exists with a key")));
                }
                let missing: Vec<&String> = t
                    .required_columns()
                    .filter(|c| !i.columns.contains(c))
                    .collect();
                let pk_redacted: Vec<&String> = if t.id_columns.is_empty() {
                    i.primary_key
                        .iter()
                        .filter(|c| t.redact_columns.contains(c))
                        .collect()
                } else {
                    Vec::new()
                };
                if !pk_redacted.is_empty() {
                    out.push(Finding::fail(
                        format!("table {name}: its primary key {pk_redacted:?} is redacted, but is the item's resource id (id_columns is not set): it would leak"),
                        "set id_columns to other columns, or stop redacting the key",
                    ));
                }
                if t.id_columns.is_empty() {
                    if let Some(c) = i.primary_key.iter().find(|c| t.ignore_columns.contains(c)) {
                        out.push(Finding::fail(
                            crate::config::ignored_key(&name, c),
                            "take the key column out of ignore_columns",
                        ));
                    }
                }
                if !missing.is_empty() {
                    out.push(Finding::fail(
                        format!("table {name} lacks configured columns {missing:?}"),
                        "fix the column names in its [[tables]] entry",
                    ));
                }
                if i.partitioned {
                    out.push(Finding::warn(
                        format!("table {name} is partitioned: its partitions' changes (TRUNCATE of one included) are audited as its own, but DETACH PARTITION and DROP of a partition remove rows, and ATTACH PARTITION of a table holding rows adds them, without anything in the WAL stream"),
                        "remove partitions' rows with DELETE or TRUNCATE where the trail must show them, attach only empty tables (then load them), or audit detaching, dropping and attaching elsewhere (e.g. the platform's DDL log)",
                    ));
                    match crate::capture::catalog::links_below(&client, &[i.oid]).await {
                        Ok(links) => {
                            for ((child, _, _), _, _) in
                                links.iter().filter(|(_, _, pending)| *pending)
                            {
                                let partition =
                                    crate::capture::catalog::relation_name(&client, *child)
                                        .await
                                        .ok()
                                        .flatten()
                                        .map_or_else(
                                            || format!("relation {child}"),
                                            |(s, t)| format!("{s}.{t}"),
                                        );
                                out.push(Finding::warn(
                                    format!("table {name}: partition {partition} is pending detach (DETACH PARTITION … CONCURRENTLY not finished): Postgres publishes no change written into it, so what it takes is not in the trail (waltrail run records a gap)"),
                                    format!("ALTER TABLE {name} DETACH PARTITION {partition} FINALIZE"),
                                ));
                            }
                        }
                        Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role")),
                    }
                }
                if !cfg.postgres.manage_publication {
                    match crate::capture::catalog::unpublished_children(
                        &client,
                        &[i.oid],
                        &cfg.postgres.publication,
                    )
                    .await
                    {
                        Ok(c) if !c.is_empty() => out.push(Finding::fail(
                            format!(
                                "table {name}: inheritance children {} are not in publication {}: their changes are not published; waltrail run refuses",
                                c.iter().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", "),
                                cfg.postgres.publication
                            ),
                            "ALTER PUBLICATION … ADD TABLE ONLY each (or set postgres.manage_publication = true)",
                        )),
                        Ok(_) => {}
                        Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role's privileges")),
                    }
                }
                match crate::capture::catalog::unlogged_members(&client, &[i.oid]).await {
                    Ok(u) if !u.is_empty() => out.push(Finding::fail(
                        format!("table {name}: {} UNLOGGED: their changes are never in the WAL, so never in the trail; waltrail run refuses", u.iter().map(|(s, t)| crate::pg::qualified(s, t)).collect::<Vec<_>>().join(", ")),
                        "ALTER TABLE … SET LOGGED on each (changes made while unlogged are not in the trail)",
                    )),
                    Ok(_) => {}
                    Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role's privileges")),
                }
                let generated: Vec<&String> = t
                    .required_columns()
                    .filter(|c| i.generated.contains(c))
                    .collect();
                if !generated.is_empty() {
                    out.push(Finding::fail(
                        format!(
                            "table {name}: configured columns {generated:?} are generated columns"
                        ),
                        crate::capture::catalog::GENERATED,
                    ));
                }
                let not_full: Vec<(String, String)> = (i.replica_identity != 'f')
                    .then(|| (schema.to_owned(), table.to_owned()))
                    .into_iter()
                    .chain(i.partitions_not_full.iter().cloned())
                    .collect();
                if !not_full.is_empty() {
                    let fix = not_full
                        .iter()
                        .map(|(s, t)| {
                            format!("ALTER TABLE {} REPLICA IDENTITY FULL;", qualified(s, t))
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    let name = not_full
                        .iter()
                        .map(|(s, t)| format!("{s}.{t}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if cfg.postgres.set_replica_identity_full && i.owned_by_us {
                        out.push(Finding::warn(
                            format!("table {name} is not at REPLICA IDENTITY FULL"),
                            format!("waltrail run sets it (postgres.set_replica_identity_full); or run {fix}"),
                        ));
                    } else {
                        out.push(Finding::fail(
                            format!("table {name} is not at REPLICA IDENTITY FULL (before-values and TOAST need it)"),
                            format!("run as the table owner: {fix}"),
                        ));
                    }
                }
            }
            Err(e) => out.push(Finding::fail(
                format!("{e:#}"),
                "check the role's privileges",
            )),
        }
    }
    // The platform tables: their old rows are what winds attribution back at start.
    let a = &cfg.attribution;
    let platform = [
        a.accounts.as_ref().map(|t| &t.table),
        a.sessions.as_ref().map(|t| &t.table),
        a.keys.as_ref().map(|t| &t.table),
        a.agents.as_ref().map(|t| &t.table),
    ];
    for table in platform.into_iter().flatten() {
        let (s, t) = split_table(table);
        match table_info(&client, s, t).await {
            Ok(i) if !i.exists => out.push(Finding::fail(
                format!("attribution table {s}.{t} does not exist"),
                "check the [attribution] table names",
            )),
            Ok(i) if i.replica_identity != 'f' => out.push(Finding::warn(
                format!(
                    "attribution table {s}.{t} is not at REPLICA IDENTITY FULL: its rows changed while waltrail \
                     is down cannot be wound back to where streaming resumes"
                ),
                if cfg.postgres.set_replica_identity_full && i.owned_by_us {
                    "waltrail run sets it (postgres.set_replica_identity_full)".to_owned()
                } else {
                    format!("ALTER TABLE {} REPLICA IDENTITY FULL;", qualified(s, t))
                },
            )),
            Ok(_) => out.push(Finding::ok(format!(
                "attribution table {s}.{t} at REPLICA IDENTITY FULL"
            ))),
            Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role's privileges")),
        }
    }
    let name = &cfg.postgres.publication;
    match provision::publication_flags(&client, name).await {
        Ok(Some(flags)) => {
            let problems = provision::lost_kinds(flags);
            let wanted: Vec<(String, String)> =
                provision::publication_tables(cfg).into_iter().collect();
            let narrowed = provision::narrowed_tables(&client, name, &wanted)
                .await
                .unwrap_or_else(|e| vec![format!("{e:#}")]);
            if !narrowed.is_empty() {
                out.push(Finding::fail(
                    format!("publication {name}: {}", narrowed.join("; ")),
                    "what it left out was never published: waltrail run refuses while the trail holds items of \
                     this source, and with --accept-gap sets the publication back (no row filter, no column list) \
                     and records the gap",
                ));
            } else if problems.is_empty() {
                out.push(Finding::ok(format!(
                    "publication {name} exists and publishes every change"
                )));
            } else if cfg.postgres.manage_publication {
                out.push(Finding::warn(
                    format!("publication {name}: {}", problems.join("; ")),
                    format!(
                        "waltrail run corrects it (postgres.manage_publication); or run {}",
                        provision::publication_fix(name)
                    ),
                ));
            } else {
                out.push(Finding::fail(
                    format!(
                        "publication {name}: {}; waltrail run refuses it",
                        problems.join("; ")
                    ),
                    provision::publication_fix(name),
                ));
            }
        }
        Ok(None) => out.push(Finding::warn(
            format!("publication {name} does not exist yet"),
            if cfg.postgres.manage_publication {
                "waltrail run creates it".to_owned()
            } else {
                format!("CREATE PUBLICATION {} FOR TABLE ...", quote_ident(name))
            },
        )),
        Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role")),
    }
    // The platform tables' own publication, through which attribution is wound back at start.
    let context = format!("{name}_context");
    let tables: Vec<String> = cfg
        .context_tables()
        .into_iter()
        .map(|t| {
            let (s, t) = split_table(t);
            qualified(s, t)
        })
        .collect();
    if !tables.is_empty() {
        match provision::publication_flags(&client, &context).await {
            Ok(Some(_)) => out.push(Finding::ok(format!(
                "publication {context} (the platform tables, for the start-up rewind) exists"
            ))),
            Ok(None) if cfg.postgres.manage_publication => out.push(Finding::warn(
                format!("publication {context} (the platform tables, for the start-up rewind) does not exist yet"),
                "waltrail run creates it",
            )),
            Ok(None) => out.push(Finding::warn(
                format!(
                    "publication {context} does not exist: the start-up rewind of attribution reads through {name}, \
                     which makes Postgres hold the whole decoded window in a temporary file"
                ),
                format!(
                    "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                    quote_ident(&context),
                    tables.join(", ")
                ),
            )),
            Err(e) => out.push(Finding::fail(format!("{e:#}"), "check the role")),
        }
    }
    out
}

/// The slot's health: whether Postgres keeps the WAL it needs (`wal_status`), how much waltrail has not
/// confirmed, and whether a long transaction on the source (not waltrail) is what holds WAL back.
async fn slot_findings(
    client: &tokio_postgres::Client,
    slot: &str,
    confirmed: Option<crate::capture::Lsn>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let h = match crate::capture::catalog::slot_health(client, slot).await {
        Ok(h) => h,
        Err(e) => {
            out.push(Finding::fail(format!("{e:#}"), "check the role"));
            return out;
        }
    };
    match h.wal_status.as_deref() {
        Some("lost") => out.push(Finding::fail(
            format!("slot {slot}: wal_status = lost: Postgres removed WAL it still needed; the trail has a gap"),
            crate::capture::provision::lost_slot_message(slot, confirmed),
        )),
        Some("unreserved") => out.push(Finding::warn(
            format!(
                "slot {slot}: wal_status = unreserved: Postgres may remove WAL it still needs ({} bytes left before it is invalidated)",
                h.safe_wal_size.unwrap_or(0)
            ),
            "start waltrail (or find why it falls behind) now; or raise max_slot_wal_keep_size. Once lost, the gap is for good",
        )),
        Some(st) => out.push(Finding::ok(format!(
            "slot {slot}: wal_status = {st}{}",
            h.safe_wal_size
                .map(|b| format!(", {} MiB of WAL before max_slot_wal_keep_size", b >> 20))
                .unwrap_or_default()
        ))),
        None => {}
    }
    let unconfirmed = h.unconfirmed_bytes.unwrap_or(0);
    let retained = h.retained_bytes.unwrap_or(0);
    if unconfirmed > LAG_WARN_BYTES {
        out.push(Finding::warn(
            format!(
                "slot lag is {} MiB: written since waltrail last confirmed",
                unconfirmed >> 20
            ),
            "start waltrail (or check why it falls behind); a slot nobody reads fills the disk",
        ));
    } else {
        out.push(Finding::ok(format!(
            "slot lag {unconfirmed} bytes (not yet confirmed by waltrail)"
        )));
    }
    // WAL kept from the restart position while waltrail is caught up: an open transaction holds it.
    if retained > LAG_WARN_BYTES && retained > unconfirmed.saturating_mul(2) {
        out.push(Finding::warn(
            format!(
                "Postgres keeps {} MiB of WAL for the slot although waltrail confirmed all but {} MiB: a long transaction on the source holds it{}",
                retained >> 20,
                unconfirmed >> 20,
                h.oldest_xact_age_s
                    .map(|s| format!(" (the oldest open one is {s:.0} s old)"))
                    .unwrap_or_default()
            ),
            "find it in pg_stat_activity (state 'idle in transaction', old xact_start) and end it; waltrail is not what is slow",
        ));
    }
    out
}

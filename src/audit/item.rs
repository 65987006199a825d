//! The audit item: one change to one resource, with everything needed to read it later without joins.

use uuid::Uuid;

use crate::vocab::{source, ActorSource, ContextStatus, PrincipalType};

/// Namespace of waltrail's deterministic (v5) ids: ids depend only on the source, the commit LSN and the
/// position in the transaction, so a replay after a crash writes the very same ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f0e_5a8c_2d1b_4b7e_9c3a_7d41_2e5f_a001);

pub fn event_id(source_id: &str, commit_lsn: u64) -> Uuid {
    v5(format_args!("{source_id}/event/{commit_lsn:016X}"))
}

pub fn item_id(source_id: &str, commit_lsn: u64, seq: u32, sub: u32) -> Uuid {
    v5(format_args!(
        "{source_id}/item/{commit_lsn:016X}/{seq}/{sub}"
    ))
}

/// A v5 UUID in waltrail's namespace, exactly as `Uuid::new_v5` makes it, with the `sha1` crate's SHA-1
/// (it uses the CPU's SHA extensions where there are some: 2.6x ring's portable SHA-1 here, which was a
/// twentieth of capture's CPU) and the name written into a reused buffer (one allocation less per item).
fn v5(name: std::fmt::Arguments<'_>) -> Uuid {
    use std::io::Write;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.extend_from_slice(ID_NAMESPACE.as_bytes());
        // Writing into a Vec cannot fail.
        let _ = buf.write_fmt(name);
        let d = <sha1::Sha1 as sha1::Digest>::digest(&*buf);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&d[..16]);
        if buf.capacity() > 1 << 16 {
            *buf = Vec::new();
        }
        uuid::Builder::from_sha1_bytes(bytes).into_uuid()
    })
}

/// A stretch of the source's history that is not in the trail, and why: recorded as an item of its own so
/// an auditor reading the trail sees the hole and where it is, without waltrail's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// Why: e.g. the replication slot was lost.
    pub reason: String,
    /// The last position (and commit time) the trail holds before the gap, when known.
    pub from_lsn: Option<u64>,
    pub from_time_us: Option<i64>,
    /// Where capture resumes (0 in a gap found while streaming, until the next start records it).
    #[serde(default)]
    pub to_lsn: u64,
    /// One table's gap (it left the publication), or the whole source's (None).
    pub table: Option<String>,
    /// How many records of the same kind came before it (0: not counted): two records of one cause at
    /// the same place (a table unmapped again after a start that mapped it crashed) are two items.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub occurrence: u64,
    /// A gap that begins where capture resumes and lasts until further notice (a table no longer mapped),
    /// not a stretch that ended there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// Set in a gap that lies ahead of where capture resumes, not behind it (a publication dropped since
    /// capture last saw it: what was written while it did not exist is after `to_lsn`, and before this
    /// position, where this start found it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_lsn: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where a start's records (gaps, and their checkpoints and rosters) are placed: just before the position
/// capture resumes from, so that a start that resumes there again (the first crashed before confirming
/// anything) reads them as stored before it, like every transaction confirmed — not as a transaction to
/// replay, whose checkpoint and roster it would not see (it numbered a roster twice). No transaction's
/// commit record starts there (WAL records start at 8-byte aligned positions).
pub fn before_resuming(resume_lsn: u64) -> u64 {
    resume_lsn.saturating_sub(1)
}

/// The item recording a gap (see [`trail_record`]), its id stable for the same gap however often it is
/// accepted.
pub fn gap_item(source_id: &str, gap: &Gap, now_us: i64, sub: u32) -> AuditItem {
    let table = gap.table.clone().unwrap_or_default();
    let from = gap.from_lsn.map_or_else(
        || "the start".to_owned(),
        |l| format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff),
    );
    // Where capture resumes tells two gaps apart that start at the same position (a table out of the
    // publication twice with nothing of it captured between), and the reason two of one table recorded
    // by one start (an UNLOGGED stretch, rows a new member held); a retry of the same acceptance resumes
    // at the same position for the same reason, so it keeps the same id.
    let id = Uuid::new_v5(
        &ID_NAMESPACE,
        format!(
            "{source_id}/gap/{from}/{:X}/{:X}/{table}/{}{}",
            gap.to_lsn >> 32,
            gap.to_lsn & 0xffff_ffff,
            gap.reason,
            if gap.occurrence > 0 {
                format!("/{}", gap.occurrence)
            } else {
                String::new()
            }
        )
        .as_bytes(),
    );
    let since = gap
        .from_time_us
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let what = if table.is_empty() {
        "changes".to_owned()
    } else {
        format!("changes to {table}")
    };
    let to = format!("{:X}/{:X}", gap.to_lsn >> 32, gap.to_lsn & 0xffff_ffff);
    // Where and when it ends, so that two gaps of one table starting at the same place read apart.
    let resumed = chrono::DateTime::from_timestamp_micros(now_us)
        .map(|t| format!(" at {to}, {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_else(|| format!(" at {to}"));
    let summary = match since {
        // Ahead of the resume position: capture streams that stretch, but cannot have what Postgres does
        // not decode in it. Said from the last change the trail holds before it (a table's, or the
        // source's), where given: what a look had not seen yet before capture stopped is in doubt too.
        _ if gap.until_lsn.is_some() => format!(
            "The trail may have a gap: {what} committed after position {} and before {} may not be \
             captured (found when capture started from {to}{}; {})",
            match gap.from_lsn {
                Some(f) if f < gap.to_lsn => from.clone(),
                _ => to.clone(),
            },
            gap.until_lsn
                .map(|u| format!("{:X}/{:X}", u >> 32, u & 0xffff_ffff))
                .unwrap_or_default(),
            chrono::DateTime::from_timestamp_micros(now_us)
                .map(|t| format!(" on {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default(),
            gap.reason
        ),
        // By position, not time: changes waiting in the slot were committed before capture resumed.
        _ if gap.open => format!(
            "The trail has a gap from here on: {what} committed after position {to} are not captured (capture \
             resumed there{}; {})",
            chrono::DateTime::from_timestamp_micros(now_us)
                .map(|t| format!(" on {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default(),
            gap.reason
        ),
        Some(t) => format!(
            "The trail has a gap: {what} after {t} until capture resumed{resumed} were not captured ({})",
            gap.reason
        ),
        None => format!(
            "The trail has a gap: {what} until capture resumed{resumed} were not captured ({})",
            gap.reason
        ),
    };
    let display = if table.is_empty() {
        "audit log".to_owned()
    } else {
        table.clone()
    };
    let diff = serde_json::json!({
        "gap": {
            "reason": gap.reason,
            "from_lsn": gap.from_lsn.map(|_| from.clone()),
            "from_time_us": gap.from_time_us,
            "to_lsn": to,
            "until_lsn": gap.until_lsn.map(|u| format!("{:X}/{:X}", u >> 32, u & 0xffff_ffff)),
            "accepted_at_us": now_us,
            "table": gap.table,
        }
    });
    let mut item = trail_record(source_id, (gap.to_lsn, sub), now_us, id, diff, summary);
    item.resource_id = source_id.to_owned();
    item.resource_display = display;
    item.table_name = table;
    item
}

/// A record the trail keeps of itself (a gap, signatures stopping): platform-wide (every organization's
/// admins see it), by waltrail, just before where capture resumes (pollers meet it in order).
fn trail_record(
    source_id: &str,
    (resume_lsn, sub): (u64, u32),
    now_us: i64,
    id: Uuid,
    diff: serde_json::Value,
    summary: String,
) -> AuditItem {
    let to = format!("{:X}/{:X}", resume_lsn >> 32, resume_lsn & 0xffff_ffff);
    AuditItem {
        id,
        event_id: Uuid::new_v5(&ID_NAMESPACE, format!("{source_id}/gap/{to}").as_bytes()),
        source_id: source_id.to_owned(),
        occurred_at_us: now_us,
        commit_lsn: before_resuming(resume_lsn),
        xid: 0,
        seq: u32::MAX - sub,
        action: crate::vocab::action::GAP.into(),
        actor: Actor {
            principal_type: PrincipalType::System,
            source: source::SYSTEM.into(),
            ..Actor::default()
        },
        organization_id: String::new(),
        project_id: String::new(),
        resource_type: crate::vocab::resource_type::AUDIT_LOG.into(),
        resource_id: String::new(),
        resource_display: String::new(),
        changed_fields: Vec::new(),
        diff: diff.to_string(),
        table_name: String::new(),
        summary,
        platform_wide: true,
    }
}

/// The resource id of a source's signing gaps is the source id and this (gaps proper carry the source id
/// alone).
pub const SIGNING_GAP_SUFFIX: &str = "/checkpoint-signing";

pub fn signing_gap_resource(source_id: &str) -> String {
    format!("{source_id}{SIGNING_GAP_SUFFIX}")
}

/// The item recording that checkpoint signing stopped (`integrity.signing = "off"`) for a trail signed
/// before: no change is missing, but what follows is covered by no signed checkpoint, and an auditor must
/// see from the trail itself where proof ends. A gap of the platform chain, like [`gap_item`].
pub fn signing_gap_item(source_id: &str, resume_lsn: u64, now_us: i64, sub: u32) -> AuditItem {
    let to = format!("{:X}/{:X}", resume_lsn >> 32, resume_lsn & 0xffff_ffff);
    let when = chrono::DateTime::from_timestamp_micros(now_us)
        .map(|t| format!(", {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let reason = "checkpoint signing turned off (integrity.signing = \"off\")";
    let diff = serde_json::json!({
        "gap": {
            "reason": reason,
            "signatures": true,
            "to_lsn": to,
            "accepted_at_us": now_us,
        }
    });
    let summary = format!(
        "The trail's signatures have a gap: {reason} when capture resumed at {to}{when}; the changes from \
         here on are captured and chained but covered by no signed checkpoint until signing is on again"
    );
    let id = Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{source_id}/signing-gap/{to}").as_bytes(),
    );
    let mut item = trail_record(source_id, (resume_lsn, sub), now_us, id, diff, summary);
    item.resource_id = signing_gap_resource(source_id);
    item.resource_display = "checkpoint signing".into();
    item
}

/// The item recording that the changes streamed again after a restart, committed between `resume_lsn` and
/// `to_lsn`, name who acted from the platform's session and account tables as they were at the restart, not
/// at each commit (`why`: the slot was not read ahead to wind them back). Nothing is missing, but those
/// items' actors may be later ones: an auditor must see that from the trail itself. A gap of the platform
/// chain, like [`gap_item`].
pub fn attribution_gap_item(
    source_id: &str,
    (resume_lsn, to_lsn): (u64, u64),
    why: &str,
    now_us: i64,
    sub: u32,
) -> AuditItem {
    let lsn = |l: u64| format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff);
    let (from, to) = (lsn(resume_lsn), lsn(to_lsn));
    let when = chrono::DateTime::from_timestamp_micros(now_us)
        .map(|t| format!(" on {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let reason = format!(
        "the platform's session and account tables were not wound back to where capture resumed: {why}"
    );
    let diff = serde_json::json!({
        "gap": {
            "reason": reason,
            "attribution": true,
            "from_lsn": from,
            "to_lsn": to,
            "accepted_at_us": now_us,
        }
    });
    let summary = format!(
        "The trail's attribution has a gap: the changes committed after position {from} up to {to}, streamed \
         again when capture resumed{when}, name who acted (and how) from the platform's sessions and accounts \
         as they were then, not at each commit ({reason})"
    );
    let id = Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{source_id}/attribution-gap/{from}/{to}").as_bytes(),
    );
    let mut item = trail_record(source_id, (resume_lsn, sub), now_us, id, diff, summary);
    item.resource_id = format!("{source_id}{ATTRIBUTION_GAP_SUFFIX}");
    item.resource_display = "attribution".into();
    item
}

/// The resource id of a source's attribution gaps is the source id and this.
pub const ATTRIBUTION_GAP_SUFFIX: &str = "/attribution";

/// Who acted, and how. Empty strings mean "not known".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub principal_id: String,
    pub principal_type: PrincipalType,
    pub display_name: String,
    pub email: String,
    pub on_behalf_of_id: String,
    pub on_behalf_of_display: String,
    pub source: String,
    pub auth_method: String,
    pub key_id: String,
    pub session_id: String,
    pub request_id: String,
    pub run_id: String,
    pub client_ip: String,
    pub user_agent: String,
    /// How the actor was known: one source for who and how, never a mix of two principals'.
    pub actor_source: ActorSource,
    /// Whether the transaction's context message was trusted.
    pub context_status: ContextStatus,
}

impl Default for Actor {
    fn default() -> Self {
        Actor {
            principal_id: String::new(),
            principal_type: PrincipalType::Unknown,
            display_name: String::new(),
            email: String::new(),
            on_behalf_of_id: String::new(),
            on_behalf_of_display: String::new(),
            source: source::UNSPECIFIED.into(),
            auth_method: String::new(),
            key_id: String::new(),
            session_id: String::new(),
            request_id: String::new(),
            run_id: String::new(),
            client_ip: String::new(),
            user_agent: String::new(),
            actor_source: ActorSource::None,
            context_status: ContextStatus::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditItem {
    pub id: Uuid,
    pub event_id: Uuid,
    pub source_id: String,
    /// Commit time, microseconds since the Unix epoch.
    pub occurred_at_us: i64,
    pub commit_lsn: u64,
    pub xid: u32,
    /// Position of the change in its transaction.
    pub seq: u32,
    pub action: String,
    pub actor: Actor,
    pub organization_id: String,
    pub project_id: String,
    pub resource_type: String,
    pub resource_id: String,
    /// Display name as it was at the change: survives the resource's deletion.
    pub resource_display: String,
    pub changed_fields: Vec<String>,
    /// `{"field": {"before": .., "after": ..}}` as JSON text; redacted fields are `{"redacted": true}`.
    pub diff: String,
    /// `schema.table`.
    pub table_name: String,
    /// The plain-language line, e.g. `alice@example.com created Gateway "arcade"`.
    pub summary: String,
    /// Concerns every organization (a TRUNCATE, a gap in the trail): shown to every organization's admins.
    pub platform_wide: bool,
}

#[cfg(test)]
impl AuditItem {
    /// An item whose every field holds a value of its own, so a test can tell fields apart.
    pub fn sample() -> AuditItem {
        AuditItem {
            id: Uuid::from_u128(1),
            event_id: Uuid::from_u128(2),
            source_id: "src".into(),
            occurred_at_us: 1_700_000_000_000_001,
            commit_lsn: 0x16_B374_D848,
            xid: 7,
            seq: 8,
            action: "AUDIT_ACTION_ROTATED".into(),
            actor: Actor {
                principal_id: "acct_1".into(),
                principal_type: PrincipalType::Agent,
                display_name: "deploy-bot".into(),
                email: "bot@example.com".into(),
                on_behalf_of_id: "acct_2".into(),
                on_behalf_of_display: "bob@example.com".into(),
                source: "AUDIT_SOURCE_CLI".into(),
                auth_method: "API_KEY".into(),
                key_id: "key_1".into(),
                session_id: "sess_1".into(),
                request_id: "req_1".into(),
                run_id: "run_1".into(),
                client_ip: "192.0.2.1".into(),
                user_agent: "curl/8".into(),
                actor_source: ActorSource::ContextSession,
                context_status: ContextStatus::Signed,
            },
            organization_id: "org_1".into(),
            project_id: "proj_1".into(),
            resource_type: "RESOURCE_TYPE_API_KEY".into(),
            resource_id: "k1".into(),
            resource_display: "prod-key-1".into(),
            changed_fields: vec!["key_hash".into(), "name".into()],
            diff: r#"{"key_hash":{"redacted":true}}"#.into(),
            table_name: "public.api_keys".into(),
            summary: "deploy-bot (for bob@example.com) rotated API key \"prod-key-1\"".into(),
            platform_wide: true,
        }
    }
}

/// Resource ids from several key columns are joined with '/'; '%' and '/' inside a value are
/// percent-escaped so the joined form is unambiguous. A single column's value is the id as it is (what a
/// reader filters by).
pub fn join_resource_id<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let parts: Vec<&str> = parts.into_iter().collect();
    if let [one] = parts.as_slice() {
        return (*one).to_owned();
    }
    let mut out = String::new();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for c in p.chars() {
            match c {
                '%' => out.push_str("%25"),
                '/' => out.push_str("%2F"),
                c => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(item_id("s", 10, 1, 0), item_id("s", 10, 1, 0));
        assert_ne!(item_id("s", 10, 1, 0), item_id("s", 10, 2, 0));
        assert_ne!(item_id("s", 10, 1, 0), item_id("t", 10, 1, 0));
        assert_ne!(event_id("s", 10), event_id("s", 11));
    }

    #[test]
    fn ids_are_the_v5_uuids_they_always_were() {
        // Stored ids must never change: a replay after an upgrade writes the same ids.
        for (source, lsn, seq, sub) in [
            ("s", 10, 1, 0),
            ("a/b/c", u64::MAX, u32::MAX, 7),
            ("é", 0, 0, 0),
        ] {
            let name = format!("{source}/item/{lsn:016X}/{seq}/{sub}");
            assert_eq!(
                item_id(source, lsn, seq, sub),
                Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
            );
            let name = format!("{source}/event/{lsn:016X}");
            assert_eq!(
                event_id(source, lsn),
                Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
            );
        }
        let long = "x".repeat(100_000);
        assert_eq!(
            event_id(&long, 1),
            Uuid::new_v5(&ID_NAMESPACE, format!("{long}/event/{:016X}", 1).as_bytes())
        );
        // And pinned, in case the uuid crate's v5 ever changed.
        assert_eq!(
            item_id("s", 1, 2, 3).to_string(),
            "62c58f53-5b6e-58cb-bc92-cc3b91656290"
        );
    }

    #[test]
    fn composite_ids_are_unambiguous() {
        assert_eq!(join_resource_id(["a/b", "c"]), "a%2Fb/c");
        assert_ne!(
            join_resource_id(["a/b", "c"]),
            join_resource_id(["a", "b/c"])
        );
        assert_eq!(join_resource_id(["42"]), "42");
        assert_eq!(
            join_resource_id(["SKU/1%x"]),
            "SKU/1%x",
            "one column: as it is"
        );
    }

    /// A stretch ahead of the resume position is said from the last change the trail holds before it,
    /// where that is given, to where the start found the publication again (QA40 M2).
    #[test]
    fn a_gap_ahead_is_said_from_the_last_change_held() {
        let gap = Gap {
            reason: "public.t was out of publication p".into(),
            from_lsn: Some(0x1_0000_0100),
            from_time_us: Some(1),
            to_lsn: 0x1_0000_0200,
            table: Some("public.t".into()),
            occurrence: 0,
            open: false,
            until_lsn: Some(0x1_0000_0300),
        };
        let summary = gap_item("src", &gap, 5, 0).summary;
        assert!(
            summary.contains("changes to public.t committed after position 1/100 and before 1/300")
                && summary.contains("found when capture started from 1/200"),
            "{summary}"
        );
        let unknown = Gap {
            from_lsn: None,
            table: None,
            ..gap
        };
        let summary = gap_item("src", &unknown, 5, 0).summary;
        assert!(
            summary.contains("changes committed after position 1/200 and before 1/300"),
            "{summary}"
        );
    }

    /// Two gaps of one table that start at the same position (nothing of it captured between), or that
    /// one start records for two reasons, are two records; the same gap accepted again is one.
    #[test]
    fn gaps_are_told_apart_by_where_capture_resumes() {
        let gap = |to_lsn: u64| Gap {
            reason: "out of the publication".into(),
            from_lsn: Some(0x1_0000_0100),
            from_time_us: Some(1),
            to_lsn,
            table: Some("public.t".into()),
            occurrence: 0,
            open: false,
            until_lsn: None,
        };
        let id = |g: &Gap| gap_item("src", g, 5, 0).id;
        assert_ne!(id(&gap(0x1_0000_0200)), id(&gap(0x1_0000_0300)));
        assert_eq!(id(&gap(0x1_0000_0200)), id(&gap(0x1_0000_0200)));
        assert_eq!(
            gap_item("src", &gap(0x1_0000_0200), 5, 0).id,
            gap_item("src", &gap(0x1_0000_0200), 9, 0).id,
            "not the time it was recorded"
        );
        let unlogged = Gap {
            reason: "public.t was UNLOGGED".into(),
            ..gap(0x1_0000_0200)
        };
        assert_ne!(id(&unlogged), id(&gap(0x1_0000_0200)), "nor its reason");
        // A table unmapped again where an earlier start's record of the same cause sits (that start
        // crashed before confirming): its own item.
        let again = Gap {
            occurrence: 3,
            ..gap(0x1_0000_0200)
        };
        assert_ne!(
            id(&again),
            id(&gap(0x1_0000_0200)),
            "nor how many came before"
        );
    }
}

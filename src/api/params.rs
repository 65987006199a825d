//! Query-string parsing: repeated parameters, strict validation, errors that name the parameter.

use chrono::DateTime;

use crate::store::query::{Cursor, Filters, Order, MAX_CURSOR_TEXT};
use crate::vocab::{source, ActorSource, PrincipalType};

pub const BUILTIN_ACTIONS: [&str; 12] = [
    "AUDIT_ACTION_CREATED",
    "AUDIT_ACTION_UPDATED",
    "AUDIT_ACTION_DELETED",
    "AUDIT_ACTION_DISABLED",
    "AUDIT_ACTION_ENABLED",
    "AUDIT_ACTION_ROTATED",
    "AUDIT_ACTION_RESTORED",
    "AUDIT_ACTION_TRUNCATED",
    "AUDIT_ACTION_ALTERED",
    "AUDIT_ACTION_EXPORTED",
    "AUDIT_ACTION_MOVED",
    "AUDIT_ACTION_REJECTED",
];

pub const BUILTIN_RESOURCE_TYPES: [&str; 19] = [
    "RESOURCE_TYPE_API_KEY",
    "RESOURCE_TYPE_CUSTOMER",
    "RESOURCE_TYPE_INVITATION",
    "RESOURCE_TYPE_ORGANIZATION",
    "RESOURCE_TYPE_PROJECT",
    "RESOURCE_TYPE_PROJECT_MEMBER",
    "RESOURCE_TYPE_USER",
    "RESOURCE_TYPE_WORKER",
    "RESOURCE_TYPE_GATEWAY",
    "RESOURCE_TYPE_PLUGIN",
    "RESOURCE_TYPE_HOOK",
    "RESOURCE_TYPE_MODEL",
    "RESOURCE_TYPE_AUTH_PROVIDER",
    "RESOURCE_TYPE_SECRET",
    "RESOURCE_TYPE_USER_CONNECTION",
    "RESOURCE_TYPE_DEPLOYMENT",
    "RESOURCE_TYPE_SETTING",
    "RESOURCE_TYPE_AUDIT_LOG",
    "RESOURCE_TYPE_AUDIT_EVENT",
];

/// What the deployment's mappings can produce, beyond the built-in names.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub actions: Vec<String>,
    pub resource_types: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ListParams {
    pub filters: Filters,
    pub limit: u32,
    pub order: Order,
    pub cursor: Option<Cursor>,
    pub format: Option<String>,
}

const MAX_VALUES: usize = 100;
const MAX_VALUE_LEN: usize = 512;

/// Parse a list or export query string. `allow_format` admits `format` (export only).
pub fn parse(
    query: Option<&str>,
    vocab: &Vocabulary,
    allow_format: bool,
) -> Result<ListParams, String> {
    let mut p = ListParams {
        filters: Filters::default(),
        limit: 50,
        order: Order::Desc,
        cursor: None,
        format: None,
    };
    let mut cursor_text: Option<String> = None;
    let mut seen_single: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let k = k.into_owned();
        let v = v.into_owned();
        // An asc cursor carries a position per source: it may be longer than any filter value.
        let max_len = match k.as_str() {
            "cursor" => MAX_CURSOR_TEXT,
            _ => MAX_VALUE_LEN,
        };
        if v.len() > max_len {
            return Err(format!(
                "invalid parameter {k}: longer than {max_len} characters"
            ));
        }
        let single = matches!(
            k.as_str(),
            "limit" | "cursor" | "order" | "since" | "until" | "format"
        );
        if single {
            if seen_single.contains(&k) {
                return Err(format!("invalid parameter {k}: give it once"));
            }
            seen_single.push(k.clone());
        }
        let f = &mut p.filters;
        let list: Option<&mut Vec<String>> = match k.as_str() {
            "action" => {
                if !BUILTIN_ACTIONS.contains(&v.as_str()) && !vocab.actions.contains(&v) {
                    return Err(format!(
                        "invalid parameter action: unknown value {v:?} (e.g. AUDIT_ACTION_CREATED)"
                    ));
                }
                Some(&mut f.actions)
            }
            "resource_type" => {
                if !BUILTIN_RESOURCE_TYPES.contains(&v.as_str())
                    && !vocab.resource_types.contains(&v)
                {
                    return Err(format!(
                        "invalid parameter resource_type: unknown value {v:?} (e.g. RESOURCE_TYPE_API_KEY)"
                    ));
                }
                Some(&mut f.resource_types)
            }
            "source" => {
                if source::validate(&v).is_err() {
                    return Err(format!(
                        "invalid parameter source: unknown value {v:?} (e.g. AUDIT_SOURCE_API)"
                    ));
                }
                Some(&mut f.sources)
            }
            "principal_type" => {
                // Exact names only: a filter is matched against stored values as they are.
                if !PrincipalType::ALL.iter().any(|p| p.as_str() == v) {
                    return Err(format!(
                        "invalid parameter principal_type: unknown value {v:?} (one of {})",
                        PrincipalType::ALL.map(|p| p.as_str()).join(", ")
                    ));
                }
                Some(&mut f.principal_types)
            }
            "principal_id" => Some(&mut f.principal_ids),
            "user" => Some(&mut f.users),
            "project_id" => Some(&mut f.project_ids),
            "resource_id" => Some(&mut f.resource_ids),
            "changed_field" => Some(&mut f.changed_fields),
            "actor_source" => {
                ActorSource::parse(&v)
                    .map_err(|e| format!("invalid parameter actor_source: {e}"))?;
                Some(&mut f.actor_sources)
            }
            "since" | "until" => {
                let t = DateTime::parse_from_rfc3339(&v)
                    .map_err(|_| format!("invalid parameter {k}: {v:?} is not an RFC 3339 time like 2026-11-27T10:00:00Z"))?;
                // Items are stored to the microsecond: a finer bound is rounded up, which keeps `since`
                // inclusive and `until` exclusive of exactly the items they name (an item at .220567 is
                // before since=.2205679 and before until=.2205671).
                let us = t
                    .timestamp_micros()
                    .saturating_add(i64::from(t.timestamp_subsec_nanos() % 1000 != 0));
                if k == "since" {
                    f.since_us = Some(us);
                } else {
                    f.until_us = Some(us);
                }
                None
            }
            "limit" => {
                p.limit = match v.parse::<u32>() {
                    Ok(n) if (1..=100).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "invalid parameter limit: {v:?} is not an integer from 1 to 100"
                        ))
                    }
                };
                None
            }
            "order" => {
                p.order = match v.as_str() {
                    "desc" => Order::Desc,
                    "asc" => Order::Asc,
                    _ => return Err(format!("invalid parameter order: {v:?} is not desc or asc")),
                };
                None
            }
            "cursor" => {
                cursor_text = Some(v.clone());
                None
            }
            "format" if allow_format => {
                if v != "ndjson" && v != "csv" {
                    return Err(format!(
                        "invalid parameter format: {v:?} is not ndjson or csv"
                    ));
                }
                p.format = Some(v.clone());
                None
            }
            other => return Err(format!("unknown parameter {other}")),
        };
        if let Some(list) = list {
            if v.is_empty() {
                return Err(format!("invalid parameter {k}: empty value"));
            }
            if list.len() >= MAX_VALUES {
                return Err(format!(
                    "invalid parameter {k}: more than {MAX_VALUES} values"
                ));
            }
            list.push(v);
        }
    }
    if let (Some(s), Some(u)) = (p.filters.since_us, p.filters.until_us) {
        if s >= u {
            return Err("invalid parameters since/until: since must be before until".into());
        }
    }
    if let Some(c) = cursor_text {
        let c = Cursor::decode(&c).map_err(|e| format!("invalid parameter cursor: {e}"))?;
        if c.order() != p.order {
            return Err("invalid parameter cursor: it was issued for the other order".into());
        }
        p.cursor = Some(c);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Vocabulary {
        Vocabulary {
            actions: vec!["AUDIT_ACTION_PAUSED".into()],
            resource_types: vec![],
        }
    }

    #[test]
    fn repeated_filters_and_defaults() {
        let p = parse(
            Some("action=AUDIT_ACTION_CREATED&action=AUDIT_ACTION_PAUSED&user=a%40b.c"),
            &v(),
            false,
        )
        .unwrap();
        assert_eq!(p.filters.actions.len(), 2);
        assert_eq!(p.filters.users, ["a@b.c"]);
        assert_eq!(p.limit, 50);
    }

    #[test]
    fn finer_than_microsecond_bounds_round_up() {
        let p = parse(
            Some("since=2026-11-30T08:11:00.220567999Z&until=2026-11-30T08:11:00.220567001Z"),
            &v(),
            false,
        );
        // Both round up to .220568: an item at .220567 is before since, and before until.
        let e = p.unwrap_err();
        assert!(e.contains("since must be before until"), "{e}");
        let p = parse(
            Some("since=2026-11-30T08:11:00.220567001Z&until=2026-11-30T08:11:00.220569Z"),
            &v(),
            false,
        )
        .unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
        assert_eq!(p.filters.since_us, Some(at("2026-11-30T08:11:00.220568Z")));
        assert_eq!(p.filters.until_us, Some(at("2026-11-30T08:11:00.220569Z")));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (q, name) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=-5", "limit"),
            ("limit=99999999999999999999", "limit"),
            ("limit=1&limit=2", "limit"),
            ("since=yesterday", "since"),
            ("until=2026-13-01T00:00:00Z", "until"),
            ("action=AUDIT_ACTION_NOPE", "action"),
            ("action=';DROP TABLE x--", "action"),
            ("resource_type=FOO", "resource_type"),
            ("principal_type=ROBOT", "principal_type"),
            ("source=api", "source"),
            ("cursor=zzz", "cursor"),
            ("order=sideways", "order"),
            ("format=csv", "format"),
            ("bogus=1", "bogus"),
            (
                "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
                "since",
            ),
        ] {
            let e = parse(Some(q), &v(), false).unwrap_err();
            assert!(e.contains(name), "{q}: {e}");
        }
    }
}

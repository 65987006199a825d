//! The plain-language line of an item: `alice@example.com created Gateway "arcade"`.
//! One function, so the CLI, the API and the dashboard say the same thing.

/// Who, as a person reads it: an account by email, anything else by name; an agent or key acting for
/// someone says so.
pub fn actor_label(
    principal_type: &str,
    principal_id: &str,
    display_name: &str,
    email: &str,
    on_behalf_of_id: &str,
    on_behalf_of_display: &str,
) -> String {
    let first_non_empty = |xs: &[&str]| xs.iter().find(|s| !s.is_empty()).map(|s| s.to_string());
    let who = match principal_type {
        "ACCOUNT" => first_non_empty(&[email, display_name, principal_id]),
        _ => first_non_empty(&[display_name, email, principal_id]),
    };
    let who = who.unwrap_or_else(|| match principal_type {
        "SYSTEM" => "The system".into(),
        _ => "Someone".into(),
    });
    match first_non_empty(&[on_behalf_of_display, on_behalf_of_id]) {
        Some(obo) => format!("{who} (for {obo})"),
        None => who,
    }
}

/// `AUDIT_ACTION_ROTATED` → `rotated`.
pub fn verb(action: &str) -> String {
    let a = action.strip_prefix("AUDIT_ACTION_").unwrap_or(action);
    a.to_ascii_lowercase().replace('_', " ")
}

/// `RESOURCE_TYPE_API_KEY` → `API key`; `RESOURCE_TYPE_GATEWAY` → `Gateway`.
pub fn resource_noun(resource_type: &str) -> String {
    const ACRONYMS: [&str; 8] = ["API", "SSO", "IP", "URL", "MCP", "LLM", "OAUTH", "ID"];
    let t = resource_type
        .strip_prefix("RESOURCE_TYPE_")
        .unwrap_or(resource_type);
    t.split('_')
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| {
            if ACRONYMS.contains(&w) {
                w.to_owned()
            } else if i == 0 {
                let lower = w.to_ascii_lowercase();
                let mut c = lower.chars();
                match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => String::new(),
                }
            } else {
                w.to_ascii_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn title_word(s: &str) -> String {
    let lower = s.to_ascii_lowercase().replace('_', " ");
    let mut c = lower.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// `AUDIT_ACTION_ROTATED` → `Rotated` (a filter's or a badge's label).
pub fn action_label(action: &str) -> String {
    match action.strip_prefix("AUDIT_ACTION_").unwrap_or(action) {
        "" => "Unknown".into(),
        a => title_word(a),
    }
}

/// `AUDIT_SOURCE_DASHBOARD` → `Dashboard`; acronyms stay upper case.
pub fn source_label(source: &str) -> String {
    match source.strip_prefix("AUDIT_SOURCE_").unwrap_or(source) {
        "" | "UNSPECIFIED" => "Unknown source".into(),
        s @ ("API" | "CLI" | "SDK") => s.into(),
        s => title_word(s),
    }
}

/// `ACCOUNT` → `User`, `SERVICE_KEY` → `API key`.
pub fn principal_label(principal_type: &str) -> String {
    match principal_type {
        "ACCOUNT" => "User".into(),
        "SERVICE_KEY" => "API key".into(),
        "" | "UNKNOWN" => "Unknown".into(),
        p => title_word(p),
    }
}

/// How the actor was known, as a person asks it: `NONE` → `Nobody can account for it`.
pub fn actor_source_label(actor_source: &str) -> String {
    match actor_source {
        "CONTEXT_MESSAGE" => "Named by the request's context".into(),
        "CONTEXT_SESSION" => "The request's session".into(),
        "ROW_COLUMN" => "An actor column on the row".into(),
        "ROW_SESSION" => "A session column on the row".into(),
        "REPLICATION_ORIGIN" => "A system replication origin".into(),
        "SIGNED_EVENT" => "waltrail's own signed record".into(),
        "NONE" => "Nobody can account for it".into(),
        "" => "Not recorded (stored before waltrail recorded it)".into(),
        other => title_word(other),
    }
}

pub fn summary(
    actor: &str,
    action: &str,
    resource_type: &str,
    resource_display: &str,
    resource_id: &str,
) -> String {
    let noun = resource_noun(resource_type);
    let verb = verb(action);
    if action == "AUDIT_ACTION_REJECTED" && resource_type == "RESOURCE_TYPE_AUDIT_EVENT" {
        return "An audit event waltrail did not write was rejected".into();
    }
    if action == "AUDIT_ACTION_MOVED" {
        let name = if resource_display.is_empty() {
            resource_id
        } else {
            resource_display
        };
        return format!("{actor} moved {noun} \"{name}\"");
    }
    if resource_type == "RESOURCE_TYPE_AUDIT_LOG" {
        return format!("{actor} {verb} the audit log");
    }
    if action == "AUDIT_ACTION_TRUNCATED" {
        return format!("{actor} {verb} every {noun} in {resource_display}");
    }
    let name = if !resource_display.is_empty() {
        resource_display
    } else {
        resource_id
    };
    if name.is_empty() {
        format!("{actor} {verb} a {noun}")
    } else {
        format!("{actor} {verb} {noun} \"{name}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_the_product() {
        let alice = actor_label("ACCOUNT", "acct_1", "Alice", "alice@example.com", "", "");
        assert_eq!(
            summary(
                &alice,
                "AUDIT_ACTION_CREATED",
                "RESOURCE_TYPE_GATEWAY",
                "arcade",
                "gw1"
            ),
            "alice@example.com created Gateway \"arcade\""
        );
        let bot = actor_label(
            "AGENT",
            "agent_7",
            "deploy-bot",
            "",
            "acct_2",
            "bob@example.com",
        );
        assert_eq!(
            summary(
                &bot,
                "AUDIT_ACTION_ROTATED",
                "RESOURCE_TYPE_API_KEY",
                "prod-key-1",
                "k1"
            ),
            "deploy-bot (for bob@example.com) rotated API key \"prod-key-1\""
        );
        assert_eq!(
            resource_noun("RESOURCE_TYPE_PROJECT_MEMBER"),
            "Project member"
        );
        assert_eq!(
            resource_noun("RESOURCE_TYPE_AUTH_PROVIDER"),
            "Auth provider"
        );
        assert_eq!(actor_label("UNKNOWN", "", "", "", "", ""), "Someone");
        assert_eq!(action_label("AUDIT_ACTION_ROLE_CHANGED"), "Role changed");
        assert_eq!(source_label("AUDIT_SOURCE_API"), "API");
        assert_eq!(source_label("AUDIT_SOURCE_WEB_APP"), "Web app");
        assert_eq!(source_label("AUDIT_SOURCE_UNSPECIFIED"), "Unknown source");
        assert_eq!(principal_label("SERVICE_KEY"), "API key");
        assert_eq!(
            summary(
                "Someone",
                "AUDIT_ACTION_DELETED",
                "RESOURCE_TYPE_PROJECT",
                "",
                "p1"
            ),
            "Someone deleted Project \"p1\""
        );
    }
}

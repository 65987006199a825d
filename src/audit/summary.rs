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
    let mut out = String::new();
    push_verb(&mut out, action);
    out
}

fn push_verb(out: &mut String, action: &str) {
    let a = action.strip_prefix("AUDIT_ACTION_").unwrap_or(action);
    out.extend(a.chars().map(|c| match c {
        '_' => ' ',
        c => c.to_ascii_lowercase(),
    }));
}

/// `RESOURCE_TYPE_API_KEY` → `API key`; `RESOURCE_TYPE_GATEWAY` → `Gateway`.
pub fn resource_noun(resource_type: &str) -> String {
    let mut out = String::new();
    push_noun(&mut out, resource_type);
    out
}

/// Written in place: a summary is made for every item, and the words cost more than the line.
fn push_noun(out: &mut String, resource_type: &str) {
    const ACRONYMS: [&str; 8] = ["API", "SSO", "IP", "URL", "MCP", "LLM", "OAUTH", "ID"];
    let t = resource_type
        .strip_prefix("RESOURCE_TYPE_")
        .unwrap_or(resource_type);
    for (i, w) in t.split('_').filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if ACRONYMS.contains(&w) {
            out.push_str(w);
        } else {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.push(if i == 0 {
                    f.to_ascii_uppercase()
                } else {
                    f.to_ascii_lowercase()
                });
            }
            out.extend(c.map(|c| c.to_ascii_lowercase()));
        }
    }
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
    if action == "AUDIT_ACTION_REJECTED" && resource_type == "RESOURCE_TYPE_AUDIT_EVENT" {
        return "An audit event waltrail did not write was rejected".into();
    }
    let name = if resource_display.is_empty() {
        resource_id
    } else {
        resource_display
    };
    let mut out = String::with_capacity(actor.len() + name.len() + 48);
    out.push_str(actor);
    out.push(' ');
    if action == "AUDIT_ACTION_MOVED" {
        out.push_str("moved ");
        push_noun(&mut out, resource_type);
        push_quoted(&mut out, name);
        return out;
    }
    push_verb(&mut out, action);
    if resource_type == "RESOURCE_TYPE_AUDIT_LOG" {
        out.push_str(" the audit log");
    } else if action == "AUDIT_ACTION_TRUNCATED" || action == "AUDIT_ACTION_ALTERED" {
        out.push_str(" every ");
        push_noun(&mut out, resource_type);
        out.push_str(" in ");
        out.push_str(resource_display);
    } else if name.is_empty() {
        out.push_str(" a ");
        push_noun(&mut out, resource_type);
    } else {
        out.push(' ');
        push_noun(&mut out, resource_type);
        push_quoted(&mut out, name);
    }
    out
}

fn push_quoted(out: &mut String, name: &str) {
    out.push_str(" \"");
    out.push_str(name);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_of_line() {
        let line = |action, rtype, display, id| summary("bob", action, rtype, display, id);
        assert_eq!(
            line("AUDIT_ACTION_MOVED", "RESOURCE_TYPE_OAUTH_CLIENT", "", "c1"),
            "bob moved OAUTH client \"c1\""
        );
        assert_eq!(
            line("AUDIT_ACTION_EXPORTED", "RESOURCE_TYPE_AUDIT_LOG", "x", "y"),
            "bob exported the audit log"
        );
        assert_eq!(
            line(
                "AUDIT_ACTION_TRUNCATED",
                "RESOURCE_TYPE_SSO_SETTING",
                "public.sso",
                ""
            ),
            "bob truncated every SSO setting in public.sso"
        );
        assert_eq!(
            line(
                "AUDIT_ACTION_ALTERED",
                "RESOURCE_TYPE_SSO_SETTING",
                "public.sso",
                ""
            ),
            "bob altered every SSO setting in public.sso"
        );
        assert_eq!(
            line("AUDIT_ACTION_ROLE_CHANGED", "RESOURCE_TYPE_MEMBER", "", ""),
            "bob role changed a Member"
        );
        assert_eq!(
            line("AUDIT_ACTION_UPDATED", "weird__Type_é", "Ünï", "1"),
            "bob updated Weird type é \"Ünï\""
        );
        assert_eq!(
            line("AUDIT_ACTION_REJECTED", "RESOURCE_TYPE_AUDIT_EVENT", "", ""),
            "An audit event waltrail did not write was rejected"
        );
    }

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

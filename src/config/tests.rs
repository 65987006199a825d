//! The rules a config file must satisfy, one case per rule: what `waltrail run` accepts, and for what it
//! refuses, the words of the error that tell the operator which key to fix.
//!
//! Each case is a TOML snippet laid over [`MINIMAL`]: its tables are merged key by key into the minimal
//! config's, and any other value (an array such as `[[tables]]` included) replaces the minimal one. So a case
//! reads as "the minimal config, except ...".

use super::Config;

/// The smallest config that passes: a Postgres URL with a user, the `[clickhouse]` section (all defaults)
/// and one table.
const MINIMAL: &str = r#"
[postgres]
url = "postgres://waltrail@db:5432/platform"

[clickhouse]

[[tables]]
table = "api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
"#;

/// 64 hex digits, the shape of `waltrail hash-key`'s output.
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[derive(Clone)]
enum Expect {
    Accepted,
    /// Refused, with an error containing this phrase.
    Refused(&'static str),
    /// Refused when read, with an error that quotes the line of `key` (as `key = value`) and says `why`.
    BadValue {
        key: &'static str,
        why: &'static str,
    },
}
use Expect::{Accepted, BadValue, Refused};

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The minimal config with `snippet` laid over it, as TOML text.
fn config_text(snippet: &str) -> String {
    let mut base: toml::Table = MINIMAL.parse().expect("MINIMAL is TOML");
    let over: toml::Table = snippet
        .parse()
        .unwrap_or_else(|e| panic!("snippet is not TOML: {e}\n{snippet}"));
    merge(&mut base, over);
    toml::to_string(&base).expect("a TOML table serializes")
}

/// What `waltrail run` does with the file (short of the environment): parse, then validate.
fn load(text: &str) -> Result<Config, String> {
    let cfg = Config::parse(text).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Run every case and report all that disagree at once.
fn check(cases: &[(&str, &str, Expect)]) {
    let mut failures = Vec::new();
    for (name, snippet, expect) in cases {
        let text = config_text(snippet);
        let phrases = match expect {
            Accepted => vec![],
            Refused(phrase) => vec![phrase.to_string()],
            BadValue { key, why } => vec![format!("{key} = "), why.to_string()],
        };
        match (load(&text), expect) {
            (Ok(_), Accepted) => {}
            (Err(e), Accepted) => failures.push(format!("{name}: refused: {e}")),
            (Ok(_), _) => failures.push(format!(
                "{name}: accepted, expected an error with {phrases:?}"
            )),
            (Err(e), _) => {
                if let Some(p) = phrases.iter().find(|p| !e.contains(p.as_str())) {
                    failures.push(format!("{name}: error does not contain {p:?}:\n    {e}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn minimal_config_is_accepted_as_written() {
    let cfg = load(MINIMAL).expect("the minimal config passes");
    assert_eq!(cfg.tables.len(), 1);
    assert_eq!(cfg.tables[0].table, "api_keys");
}

#[test]
fn postgres_section() {
    check(&[
        ("minimal", "", Accepted),
        (
            "libpq-style url",
            "[postgres]\nurl = \"host=db port=5432 user=waltrail dbname=platform\"",
            Accepted,
        ),
        (
            "url that is not a connection string",
            "[postgres]\nurl = \"host=db port=notaport user=waltrail\"",
            Refused("postgres.url is not a valid connection string"),
        ),
        (
            "url without a user",
            "[postgres]\nurl = \"postgres://db:5432/platform\"",
            Refused("postgres.url names no user"),
        ),
        (
            "slot with upper case and dash",
            "[postgres]\nslot = \"Audit-Slot\"",
            Refused("postgres.slot \"Audit-Slot\": a replication slot name may use only lower-case letters, digits and '_'"),
        ),
        (
            "slot with a dot",
            "[postgres]\nslot = \"waltrail.v2\"",
            Refused("postgres.slot \"waltrail.v2\""),
        ),
        (
            "empty slot",
            "[postgres]\nslot = \"\"",
            Refused("postgres.slot \"\""),
        ),
        (
            "slot of lower case, digits and _",
            "[postgres]\nslot = \"waltrail_eu_2\"",
            Accepted,
        ),
        (
            "empty publication",
            "[postgres]\npublication = \"\"",
            Refused("postgres.publication must not be empty"),
        ),
        (
            "status interval 0",
            "[postgres]\nstatus_interval_ms = 0",
            Refused("postgres.status_interval_ms must be at least 1"),
        ),
        (
            "status interval 1",
            "[postgres]\nstatus_interval_ms = 1",
            Accepted,
        ),
        (
            "sslmode verify-full",
            "[postgres]\nsslmode = \"verify-full\"",
            Accepted,
        ),
        (
            "sslmode spelled with _",
            "[postgres]\nsslmode = \"verify_full\"",
            BadValue {
                key: "sslmode",
                why: "sslmode \"verify_full\" must be disable, prefer, require, verify-ca or verify-full",
            },
        ),
    ]);
}

#[test]
fn clickhouse_section() {
    check(&[
        (
            "https url",
            "[clickhouse]\nurl = \"https://ch.example.com:8443\"",
            Accepted,
        ),
        (
            "native protocol url",
            "[clickhouse]\nurl = \"tcp://127.0.0.1:9000\"",
            Refused("clickhouse.url \"tcp://127.0.0.1:9000\" must be the HTTP interface"),
        ),
        (
            "url without scheme",
            "[clickhouse]\nurl = \"127.0.0.1:8123\"",
            Refused("must be the HTTP interface"),
        ),
        (
            "database with a dash",
            "[clickhouse]\ndatabase = \"audit-log\"",
            Refused("clickhouse.database \"audit-log\": use letters, digits and '_'"),
        ),
        (
            "database with a dot",
            "[clickhouse]\ndatabase = \"default.audit\"",
            Refused("clickhouse.database \"default.audit\""),
        ),
        (
            "empty database",
            "[clickhouse]\ndatabase = \"\"",
            Refused("clickhouse.database \"\""),
        ),
        (
            "database of letters, digits and _",
            "[clickhouse]\ndatabase = \"Audit_2\"",
            Accepted,
        ),
        (
            "compression none",
            "[clickhouse]\ncompression = \"none\"",
            Accepted,
        ),
        (
            "unknown compression",
            "[clickhouse]\ncompression = \"gzip\"",
            BadValue {
                key: "compression",
                why: "unknown variant `gzip`, expected `lz4` or `none`",
            },
        ),
        (
            "a cluster with the default paths and a quorum",
            "[clickhouse]\ncluster = \"audit_cluster\"\ninsert_quorum = 2",
            Accepted,
        ),
        (
            "a cluster name that would not stay one identifier",
            "[clickhouse]\ncluster = \"c1 ON CLUSTER x\"",
            Refused("clickhouse.cluster \"c1 ON CLUSTER x\""),
        ),
        (
            "a quorum without a cluster",
            "[clickhouse]\ninsert_quorum = 2",
            Refused("clickhouse.insert_quorum needs clickhouse.cluster"),
        ),
        (
            "a replica path every table would share",
            "[clickhouse]\ncluster = \"c\"\nreplica_path = \"/clickhouse/tables/{shard}/audit\"",
            Refused("clickhouse.replica_path \"/clickhouse/tables/{shard}/audit\": an absolute ZooKeeper path containing {table}"),
        ),
        (
            "a replica path that would leave its quotes",
            "[clickhouse]\ncluster = \"c\"\nreplica_path = \"/t/{table}', 'x\"",
            Refused("clickhouse.replica_path"),
        ),
        (
            "a replica name that would leave its quotes",
            "[clickhouse]\ncluster = \"c\"\nreplica_name = \"r'\"",
            Refused("clickhouse.replica_name"),
        ),
        (
            "no time for a schema change",
            "[clickhouse]\ncluster = \"c\"\nddl_timeout_s = 0",
            Refused("clickhouse.ddl_timeout_s must be at least 1"),
        ),
    ]);
}

/// The example configs shipped for docker compose are valid as they stand.
#[test]
fn shipped_examples_are_accepted() {
    for (name, text) in [
        ("docker.toml", include_str!("../../examples/docker.toml")),
        (
            "docker-cluster.toml",
            include_str!("../../examples/docker-cluster.toml"),
        ),
        ("demo.toml", include_str!("../../examples/demo.toml")),
    ] {
        if let Err(e) = load(text) {
            panic!("examples/{name}: {e}");
        }
    }
}

#[test]
fn capture_and_retention_sizes() {
    const SIZES: &str =
        "capture.batch_max_items, batch_max_bytes, channel_capacity and buffer_bytes must be at least 1";
    check(&[
        (
            "batch_max_items 0",
            "[capture]\nbatch_max_items = 0",
            Refused(SIZES),
        ),
        (
            "batch_max_bytes 0",
            "[capture]\nbatch_max_bytes = 0",
            Refused(SIZES),
        ),
        (
            "channel_capacity 0",
            "[capture]\nchannel_capacity = 0",
            Refused(SIZES),
        ),
        ("buffer_bytes 0", "[capture]\nbuffer_bytes = 0", Refused(SIZES)),
        (
            "every size 1",
            "[capture]\nbatch_max_items = 1\nbatch_max_bytes = 1\nchannel_capacity = 1\nbuffer_bytes = 1",
            Accepted,
        ),
        (
            "empty spill_dir",
            "[capture]\nspill_dir = \" \"",
            Refused("capture.spill_dir is empty"),
        ),
        (
            "spill_dir and streaming off",
            "[postgres]\nstreaming = false\n[capture]\nspill_dir = \"/var/tmp\"",
            Accepted,
        ),
        (
            "retention 0 days",
            "[retention]\ndays = 0",
            Refused("retention.days must be at least 1"),
        ),
        ("retention 1 day", "[retention]\ndays = 1", Accepted),
    ]);
}

#[test]
fn source_ids_fit_a_cursor() {
    let id = |s: &str| format!("[capture]\nsource_id = {}", toml::Value::String(s.into()));
    check(&[
        (
            "empty",
            &id(""),
            Refused("capture.source_id must be 1 to 255 bytes long (it is 0)"),
        ),
        ("256 bytes", &id(&"x".repeat(256)), Refused("(it is 256)")),
        ("255 bytes", &id(&format!("x{}", "é".repeat(127))), Accepted),
        ("any characters", &id("db:1,\"east\" 'ünï' \\ /"), Accepted),
    ]);
}

#[test]
fn attribution_section() {
    check(&[
        (
            "empty message prefix",
            "[attribution]\nmessage_prefix = \"\"",
            Refused("attribution.message_prefix must not be empty"),
        ),
        (
            "every context table, plain and schema-qualified",
            r#"
            [attribution.accounts]
            table = "accounts"
            [attribution.sessions]
            table = "auth.sessions"
            [attribution.keys]
            table = "api_keys"
            [attribution.agents]
            table = "public.agents"
            "#,
            Accepted,
        ),
        (
            "accounts table with an empty schema",
            "[attribution.accounts]\ntable = \".accounts\"",
            Refused("attribution table \".accounts\" must be `schema.table` or `table`"),
        ),
        (
            "sessions table with an empty name",
            "[attribution.sessions]\ntable = \"auth.\"",
            Refused("attribution table \"auth.\" must be `schema.table` or `table`"),
        ),
        (
            "keys table empty",
            "[attribution.keys]\ntable = \"\"",
            Refused("attribution table \"\""),
        ),
        (
            "agents table with an empty schema",
            "[attribution.agents]\ntable = \".agents\"",
            Refused("attribution table \".agents\""),
        ),
    ]);
}

#[test]
fn api_section() {
    check(&[
        (
            "static key",
            &format!("[[api.keys]]\nname = \"siem\"\nsha256 = \"{SHA}\"\norg_id = \"org_1\"\nrole = \"admin\""),
            Accepted,
        ),
        (
            "static key with upper-case hex",
            &format!(
                "[[api.keys]]\nname = \"siem\"\nsha256 = \"{}\"\norg_id = \"org_1\"",
                SHA.to_ascii_uppercase()
            ),
            Accepted,
        ),
        (
            "the key itself instead of its hash",
            "[[api.keys]]\nname = \"siem\"\nsha256 = \"wt_live_abc123\"\norg_id = \"org_1\"",
            Refused("api.keys[0] (siem): sha256 must be 64 hex digits"),
        ),
        (
            "hash one digit short",
            &format!(
                "[[api.keys]]\nname = \"siem\"\nsha256 = \"{}\"\norg_id = \"org_1\"",
                &SHA[..63]
            ),
            Refused("sha256 must be 64 hex digits"),
        ),
        (
            "64 characters, not all hex",
            &format!(
                "[[api.keys]]\nname = \"siem\"\nsha256 = \"{}g\"\norg_id = \"org_1\"",
                &SHA[..63]
            ),
            Refused("sha256 must be 64 hex digits"),
        ),
        (
            "second key has the empty org",
            &format!(
                "[[api.keys]]\nname = \"a\"\nsha256 = \"{SHA}\"\norg_id = \"org_1\"\n\
                 [[api.keys]]\nname = \"b\"\nsha256 = \"{SHA}\"\norg_id = \"\""
            ),
            Refused("api.keys[1] (b): org_id must not be empty"),
        ),
        (
            "role that is neither admin nor member",
            &format!("[[api.keys]]\nname = \"siem\"\nsha256 = \"{SHA}\"\norg_id = \"org_1\"\nrole = \"owner\""),
            BadValue {
                key: "role",
                why: "role \"owner\" must be admin or member",
            },
        ),
        (
            "rate limit 0",
            "[api]\nrate_limit_per_minute = 0",
            Refused("api.rate_limit_per_minute must be at least 1"),
        ),
        (
            "listen on all interfaces",
            "[api]\nlisten = \"0.0.0.0:8080\"",
            Accepted,
        ),
        (
            "listen on IPv6",
            "[api]\nlisten = \"[::1]:8080\"",
            Accepted,
        ),
        (
            "listen on a port only",
            "[api]\nlisten = \"8080\"",
            Refused("api.listen \"8080\" must be an IP address and a port"),
        ),
        (
            "listen on a host name",
            "[api]\nlisten = \"localhost:8080\"",
            Refused("api.listen \"localhost:8080\" must be an IP address and a port"),
        ),
    ]);
}

#[test]
fn api_limits_and_timeouts() {
    let mut cases: Vec<(String, String, Expect)> = Vec::new();
    for key in [
        "auth_failures_per_minute",
        "postgres_pool_size",
        "max_connections",
        "max_concurrent_requests",
        "max_exports",
        "max_exports_per_org",
        "header_read_timeout_ms",
        "request_timeout_ms",
        "send_timeout_ms",
        "threads",
    ] {
        cases.push((
            format!("{key} 0"),
            format!("[api]\n{key} = 0"),
            Refused(Box::leak(
                format!("api.{key} must be at least 1").into_boxed_str(),
            )),
        ));
        cases.push((format!("{key} 3"), format!("[api]\n{key} = 3"), Accepted));
        cases.push((
            format!("{key} negative"),
            format!("[api]\n{key} = -1"),
            Refused(key),
        ));
    }
    let more = [
        (
            "exports per organization above all exports",
            "[api]\nmax_exports = 3\nmax_exports_per_org = 4",
            Refused("api.max_exports_per_org = 4 is more than api.max_exports = 3"),
        ),
        (
            "exports per organization as many as all exports",
            "[api]\nmax_exports = 3\nmax_exports_per_org = 3",
            Accepted,
        ),
        (
            "proxy header",
            "[api]\nclient_address_header = \"X-Forwarded-For\"",
            Accepted,
        ),
        (
            "proxy header with a space",
            "[api]\nclient_address_header = \"X Forwarded\"",
            Refused("api.client_address_header \"X Forwarded\" is not a header name"),
        ),
        (
            "metrics token",
            "[api]\nmetrics_token = \"0123456789abcdef0123\"",
            Accepted,
        ),
        (
            "short metrics token",
            "[api]\nmetrics_token = \"short\"",
            Refused("api.metrics_token must be at least 16 characters"),
        ),
        (
            "key cache sizes",
            "[api.platform_keys]\nquery = \"SELECT 1\"\nnegative_cache_seconds = 0\ncache_entries = 10",
            Accepted,
        ),
        (
            "key cache of no entries",
            "[api.platform_keys]\nquery = \"SELECT 1\"\ncache_entries = 0",
            Refused("api.platform_keys.cache_entries must be at least 1"),
        ),
        (
            "unknown api key",
            "[api]\nmax_conections = 5",
            Refused("max_conections"),
        ),
    ];
    for (name, snippet, expect) in more {
        cases.push((name.into(), snippet.into(), expect));
    }
    let cases: Vec<(&str, &str, Expect)> = cases
        .iter()
        .map(|(n, s, e)| (n.as_str(), s.as_str(), e.clone()))
        .collect();
    check(&cases);
}

#[test]
fn api_defaults_and_the_metrics_token_from_the_environment() {
    let mut cfg = load(MINIMAL).expect("minimal");
    let api = &cfg.api;
    assert_eq!(
        (
            api.postgres_pool_size,
            api.auth_failures_per_minute,
            api.max_connections,
            api.max_concurrent_requests,
            api.max_exports,
            api.max_exports_per_org,
            api.header_read_timeout_ms,
            api.request_timeout_ms,
            api.send_timeout_ms,
        ),
        (4, 30, 1024, 64, 4, 2, 10_000, 30_000, 30_000)
    );
    assert!(api.metrics_token.is_none() && api.client_address_header.is_none());
    let applied = cfg
        .apply_env(|k| {
            (k == "WALTRAIL_METRICS_TOKEN").then(|| "from-the-env-0123456789".to_owned())
        })
        .unwrap();
    assert_eq!(applied, [("WALTRAIL_METRICS_TOKEN", "api.metrics_token")]);
    // Set but empty: refused, never a silent blank over the file's value; an empty password is a password.
    let e = cfg
        .apply_env(|k| (k == "WALTRAIL_PG_URL").then(String::new))
        .unwrap_err()
        .to_string();
    assert!(e.contains("WALTRAIL_PG_URL is set but empty"), "{e}");
    assert!(cfg
        .apply_env(|k| (k == "WALTRAIL_PG_PASSWORD").then(String::new))
        .is_ok());
    assert_eq!(
        cfg.api.metrics_token.as_ref().map(|t| t.0.as_str()),
        Some("from-the-env-0123456789")
    );
    assert_eq!(format!("{:?}", cfg.api.metrics_token), "Some(<redacted>)");
}

#[test]
fn tables_list() {
    check(&[
        (
            "no tables",
            "tables = []",
            Refused("no [[tables]]: list at least one table to audit"),
        ),
        (
            "a table listed twice",
            r#"
            [[tables]]
            table = "api_keys"
            resource_type = "RESOURCE_TYPE_API_KEY"
            [[tables]]
            table = "api_keys"
            resource_type = "RESOURCE_TYPE_KEY"
            "#,
            Refused("tables[1] (api_keys): listed twice"),
        ),
        (
            "t and public.t are the same table",
            r#"
            [[tables]]
            table = "api_keys"
            resource_type = "RESOURCE_TYPE_API_KEY"
            [[tables]]
            table = "public.api_keys"
            resource_type = "RESOURCE_TYPE_API_KEY"
            "#,
            Refused("tables[1] (public.api_keys): listed twice"),
        ),
        (
            "same name in two schemas",
            r#"
            [[tables]]
            table = "api_keys"
            resource_type = "RESOURCE_TYPE_API_KEY"
            [[tables]]
            table = "billing.api_keys"
            resource_type = "RESOURCE_TYPE_BILLING_KEY"
            "#,
            Accepted,
        ),
        (
            "table with an empty schema",
            "[[tables]]\ntable = \".api_keys\"\nresource_type = \"RESOURCE_TYPE_API_KEY\"",
            Refused("tables[0] (.api_keys): table must be `schema.table` or `table`"),
        ),
        (
            "table name longer than Postgres allows",
            &format!(
                "[[tables]]\ntable = \"billing.{}\"\nresource_type = \"RESOURCE_TYPE_API_KEY\"",
                "k".repeat(64)
            ),
            Refused("the table name is 64 bytes; Postgres names are at most 63"),
        ),
        (
            "table without resource_type",
            "[[tables]]\ntable = \"api_keys\"",
            Refused("missing field `resource_type`"),
        ),
        (
            "resource type without its prefix",
            "[[tables]]\ntable = \"api_keys\"\nresource_type = \"API_KEY\"",
            Refused("tables[0] (api_keys): resource type \"API_KEY\" must be RESOURCE_TYPE_ followed by upper-case letters"),
        ),
        (
            "resource type in lower case",
            "[[tables]]\ntable = \"api_keys\"\nresource_type = \"RESOURCE_TYPE_api_key\"",
            Refused("resource type \"RESOURCE_TYPE_api_key\""),
        ),
        (
            "resource type that is only the prefix",
            "[[tables]]\ntable = \"api_keys\"\nresource_type = \"RESOURCE_TYPE_\"",
            Refused("resource type \"RESOURCE_TYPE_\""),
        ),
    ]);
}

/// One `[[tables]]` entry for `api_keys`, with `extra` lines added to it.
fn api_keys(extra: &str) -> String {
    format!(
        "[[tables]]\ntable = \"api_keys\"\nresource_type = \"RESOURCE_TYPE_API_KEY\"\n{extra}\n"
    )
}

#[test]
fn table_columns_and_actor() {
    check(&[
        (
            "every column option",
            &api_keys(
                r#"
                id_columns = ["org_id", "id"]
                display_column = "name"
                organization_column = "org_id"
                project_column = "project_id"
                ignore_columns = ["last_used_at"]
                redact_columns = ["key_hash"]
                soft_delete_column = "deleted_at"
                [tables.actor]
                created_by = "created_by"
                updated_by = "updated_by"
                deleted_by = "deleted_by"
                principal_type = "service_key"
                "#,
            ),
            Accepted,
        ),
        (
            "actor.session without [attribution.sessions]",
            &api_keys("[tables.actor]\nsession = \"session_id\""),
            Refused("tables[0] (api_keys): actor.session needs an [attribution.sessions] table to join with"),
        ),
        (
            "actor.session with [attribution.sessions]",
            &format!(
                "[attribution.sessions]\ntable = \"sessions\"\n{}",
                api_keys("[tables.actor]\nsession = \"session_id\"")
            ),
            Accepted,
        ),
        (
            "principal type that does not exist",
            &api_keys("[tables.actor]\ncreated_by = \"created_by\"\nprincipal_type = \"ROBOT\""),
            BadValue {
                key: "principal_type",
                why: "principal type \"ROBOT\" must be one of ACCOUNT, SERVICE_KEY, AGENT, SYSTEM, UNKNOWN",
            },
        ),
        (
            "redacted display column",
            &api_keys("display_column = \"name\"\nredact_columns = [\"name\"]"),
            Refused("tables[0] (api_keys): display_column \"name\" is also redacted; its value would leak"),
        ),
        (
            "redacted id column",
            &api_keys("id_columns = [\"org_id\", \"key_hash\"]\nredact_columns = [\"key_hash\"]"),
            Refused("tables[0] (api_keys): id_columns \"key_hash\" is also redacted; its value would leak"),
        ),
        (
            "redacted organization column",
            &api_keys("organization_column = \"org_id\"\nredact_columns = [\"org_id\"]"),
            Refused("tables[0] (api_keys): organization_column \"org_id\" is also redacted"),
        ),
        (
            "redacted project column",
            &api_keys("project_column = \"project\"\nredact_columns = [\"project\"]"),
            Refused("tables[0] (api_keys): project_column \"project\" is also redacted"),
        ),
        (
            "redacted actor column",
            &api_keys("redact_columns = [\"owner\"]\n[tables.actor]\nupdated_by = \"owner\""),
            Refused("tables[0] (api_keys): actor.updated_by \"owner\" is also redacted"),
        ),
    ]);
}

/// A platform table both mapped and read for attribution: what its entry redacts must not come out in clear
/// through the items its accounts or sessions act in (QA48a H2).
#[test]
fn a_redacted_column_of_a_mapped_platform_table_is_no_attribution_column() {
    let accounts = |redact: &str, attribution: &str| {
        format!(
            "[[tables]]\ntable = \"accounts\"\nresource_type = \"RESOURCE_TYPE_ACCOUNT\"\n\
             redact_columns = [{redact}]\n[attribution.accounts]\ntable = \"accounts\"\n{attribution}"
        )
    };
    let sessions = |redact: &str, attribution: &str| {
        format!(
            "[[tables]]\ntable = \"sessions\"\nresource_type = \"RESOURCE_TYPE_SESSION\"\n\
             id_columns = [\"seq\"]\nredact_columns = [{redact}]\n[attribution]\n{attribution}\n\
             [attribution.sessions]\ntable = \"public.sessions\"\naccount_column = \"account_id\"\n\
             client_ip_column = \"client_ip\"\nuser_agent_column = \"user_agent\""
        )
    };
    check(&[
        (
            "redacted email read as the actor's email",
            &accounts("\"email\"", "email_column = \"email\""),
            Refused("tables[0] (accounts): redact_columns names \"email\", which attribution.accounts.email_column also reads: every item its account acts in would carry the value in clear (actor_email and the summary); take email_column out of [attribution.accounts]"),
        ),
        (
            "redacted name read as the actor's display name",
            &accounts("\"name\"", "display_column = \"name\""),
            Refused("attribution.accounts.display_column also reads"),
        ),
        (
            "redacted column the attribution does not read",
            &accounts("\"password_hash\"", "email_column = \"email\""),
            Accepted,
        ),
        (
            "redacted client ip, table named with its schema in one place only",
            &sessions("\"client_ip\"", ""),
            Refused("tables[0] (sessions): redact_columns names \"client_ip\", which attribution.sessions.client_ip_column also reads"),
        ),
        (
            "redacted user agent",
            &sessions("\"user_agent\"", ""),
            Refused("attribution.sessions.user_agent_column also reads"),
        ),
        (
            "redacted session id, stored as it is",
            &sessions("\"id\"", ""),
            Refused("attribution.sessions.id_column also reads"),
        ),
        (
            "redacted session id, stored hashed",
            &sessions("\"id\"", "hash_session_ids = true"),
            Accepted,
        ),
        (
            "hashed session ids, the sessions table mapped with its id in clear",
            &sessions("", "hash_session_ids = true"),
            Refused("tables[0] (sessions): attribution.hash_session_ids stores session ids hashed (they are credentials), but this is the [attribution.sessions] table: its own items would carry each session's \"id\" in clear (resource id and diff). Add \"id\" to redact_columns"),
        ),
    ]);
}

/// An update changing only ignored columns yields no item: an ignored id or scope column would hide a
/// resource changing its id or moving (QA48a M3).
#[test]
fn an_identity_or_scope_column_is_never_ignored() {
    check(&[
        (
            "ignored organization column",
            &api_keys("organization_column = \"org_id\"\nignore_columns = [\"updated_at\", \"org_id\"]"),
            Refused("tables[0] (api_keys): organization_column \"org_id\" is also in ignore_columns: an update changing it alone would leave no item, so a resource moving to another scope would not be in the trail; take \"org_id\" out of ignore_columns"),
        ),
        (
            "ignored project column",
            &api_keys("project_column = \"project_id\"\nignore_columns = [\"project_id\"]"),
            Refused("tables[0] (api_keys): project_column \"project_id\" is also in ignore_columns"),
        ),
        (
            "ignored id column",
            &api_keys("id_columns = [\"org_id\", \"id\"]\nignore_columns = [\"id\"]"),
            Refused("tables[0] (api_keys): id_columns \"id\" is also in ignore_columns: an update changing it alone would leave no item, so a resource changing its id"),
        ),
    ]);
}

#[test]
fn former_names_never_carry_a_secret_into_a_clear_role() {
    check(&[
        (
            "an organization column renamed",
            &api_keys("organization_column = \"org_id\"\nformer_names = { org_id = [\"org\"] }"),
            Accepted,
        ),
        (
            "a secret's old name standing for a clear column",
            &api_keys("redact_columns = [\"key_hash\"]\nformer_names = { name = [\"key_hash\"] }"),
            Refused("tables[0] (api_keys): former_names gives \"name\" the old name \"key_hash\", which is redacted"),
        ),
        (
            "a column its own former name",
            &api_keys("former_names = { name = [\"name\"] }"),
            Refused("tables[0] (api_keys): former_names maps a column to itself"),
        ),
    ]);
}

#[test]
fn derived_actions() {
    let derived = |action_lines: &str| {
        api_keys(&format!(
            "redact_columns = [\"key_hash\"]\n[[tables.derived_actions]]\n{action_lines}"
        ))
    };
    check(&[
        (
            "changed list, including a redacted column",
            &derived("action = \"AUDIT_ACTION_ROTATED\"\nchanged = [\"key_hash\"]"),
            Accepted,
        ),
        (
            "column with from and to",
            &derived("action = \"AUDIT_ACTION_DISABLED\"\ncolumn = \"enabled\"\nfrom = true\nto = false"),
            Accepted,
        ),
        (
            "column with only to",
            &derived("action = \"AUDIT_ACTION_REVOKED\"\ncolumn = \"status\"\nto = \"revoked\""),
            Accepted,
        ),
        (
            "action without its prefix",
            &derived("action = \"ROTATED\"\nchanged = [\"key_hash\"]"),
            Refused("tables[0] (api_keys): derived action: action \"ROTATED\" must be AUDIT_ACTION_ followed by upper-case letters"),
        ),
        (
            "action in lower case",
            &derived("action = \"AUDIT_ACTION_rotated\"\nchanged = [\"key_hash\"]"),
            Refused("derived action: action \"AUDIT_ACTION_rotated\""),
        ),
        (
            "neither changed nor column",
            &derived("action = \"AUDIT_ACTION_ROTATED\""),
            Refused("derived action AUDIT_ACTION_ROTATED needs `changed = [..]` or `column` with `from`/`to`"),
        ),
        (
            "both changed and column",
            &derived("action = \"AUDIT_ACTION_ROTATED\"\nchanged = [\"key_hash\"]\ncolumn = \"status\""),
            Refused("derived action AUDIT_ACTION_ROTATED sets both `changed` and `column`; use one"),
        ),
        (
            "from without column",
            &derived("action = \"AUDIT_ACTION_REVOKED\"\nchanged = [\"status\"]\nfrom = \"active\""),
            Refused("derived action AUDIT_ACTION_REVOKED: `from`/`to` need `column`"),
        ),
        (
            "to without column",
            &derived("action = \"AUDIT_ACTION_REVOKED\"\nchanged = [\"status\"]\nto = \"revoked\""),
            Refused("derived action AUDIT_ACTION_REVOKED: `from`/`to` need `column`"),
        ),
        (
            "from on a redacted column",
            &derived("action = \"AUDIT_ACTION_ROTATED\"\ncolumn = \"key_hash\"\nfrom = \"old\""),
            Refused("derived action AUDIT_ACTION_ROTATED compares redacted column \"key_hash\"; use `changed = [\"key_hash\"]`"),
        ),
        (
            "to on a redacted column",
            &derived("action = \"AUDIT_ACTION_ROTATED\"\ncolumn = \"key_hash\"\nto = \"new\""),
            Refused("compares redacted column \"key_hash\""),
        ),
        (
            "the second of two derived actions is wrong",
            &derived(
                "action = \"AUDIT_ACTION_ROTATED\"\nchanged = [\"key_hash\"]\n\
                 [[tables.derived_actions]]\naction = \"AUDIT_ACTION_REVOKED\"",
            ),
            Refused("derived action AUDIT_ACTION_REVOKED needs `changed = [..]`"),
        ),
    ]);
}

/// A misspelt key must stop the start, not be ignored: a typo in `redact_columns` would leak the secret.
#[test]
fn unknown_keys_are_refused_wherever_they_are() {
    check(&[
        (
            "top level",
            "[postgress]\nurl = \"x\"",
            Refused("unknown field `postgress`"),
        ),
        (
            "[postgres]",
            "[postgres]\nslot_name = \"waltrail\"",
            Refused("unknown field `slot_name`"),
        ),
        (
            "[clickhouse]",
            "[clickhouse]\nhost = \"127.0.0.1\"",
            Refused("unknown field `host`"),
        ),
        (
            "[capture]",
            "[capture]\nbatch_size = 10",
            Refused("unknown field `batch_size`"),
        ),
        (
            "[retention]",
            "[retention]\nttl_days = 10",
            Refused("unknown field `ttl_days`"),
        ),
        (
            "[attribution]",
            "[attribution]\nprefix = \"waltrail\"",
            Refused("unknown field `prefix`"),
        ),
        (
            "[attribution.sessions]",
            "[attribution.sessions]\ntable = \"sessions\"\naccount = \"account_id\"",
            Refused("unknown field `account`"),
        ),
        (
            "[attribution.accounts]",
            "[attribution.accounts]\ntable = \"accounts\"\nemail = \"email\"",
            Refused("unknown field `email`"),
        ),
        (
            "[attribution.keys]",
            "[attribution.keys]\ntable = \"keys\"\nowner = \"owner_id\"",
            Refused("unknown field `owner`"),
        ),
        (
            "[attribution.agents]",
            "[attribution.agents]\ntable = \"agents\"\nname = \"name\"",
            Refused("unknown field `name`"),
        ),
        (
            "[api]",
            "[api]\nport = 8080",
            Refused("unknown field `port`"),
        ),
        (
            "[[api.keys]]",
            &format!("[[api.keys]]\nname = \"siem\"\nsha256 = \"{SHA}\"\norg_id = \"org_1\"\nproject = \"p\""),
            Refused("unknown field `project`"),
        ),
        (
            "[api.platform_keys]",
            "[api.platform_keys]\nquery = \"select 1\"\ncache = 60",
            Refused("unknown field `cache`"),
        ),
        (
            "[[tables]]: redact_column for redact_columns",
            &api_keys("redact_column = [\"key_hash\"]"),
            Refused("unknown field `redact_column`"),
        ),
        (
            "[[tables]]: ignored_columns for ignore_columns",
            &api_keys("ignored_columns = [\"updated_at\"]"),
            Refused("unknown field `ignored_columns`"),
        ),
        (
            "[tables.actor]",
            &api_keys("[tables.actor]\ncreator = \"created_by\""),
            Refused("unknown field `creator`"),
        ),
        (
            "[[tables.derived_actions]]",
            &api_keys("[[tables.derived_actions]]\naction = \"AUDIT_ACTION_ROTATED\"\nchanged = [\"key_hash\"]\nwhen = \"x\""),
            Refused("unknown field `when`"),
        ),
    ]);
}

#[test]
fn required_keys() {
    for (name, text, phrase) in [
        (
            "no [postgres]",
            "[clickhouse]\n[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_T\"\n",
            "missing field `postgres`",
        ),
        (
            "no postgres.url",
            "[postgres]\nslot = \"w\"\n[clickhouse]\n[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_T\"\n",
            "missing field `url`",
        ),
        (
            "no [clickhouse]",
            "[postgres]\nurl = \"postgres://w@db/p\"\n[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_T\"\n",
            "missing field `clickhouse`",
        ),
    ] {
        match load(text) {
            Ok(_) => panic!("{name}: accepted, expected {phrase:?}"),
            Err(e) => assert!(e.contains(phrase), "{name}: {e} does not contain {phrase:?}"),
        }
    }
}

/// Errors found while reading point at the line of the file, so the operator need not search for the key.
#[test]
fn read_errors_name_the_line_and_the_key() {
    // MINIMAL's last line is line 9 (its first line is empty): the typo lands on line 10, in [[tables]].
    let text = format!("{MINIMAL}redact_column = [\"key_hash\"]\n");
    let e = load(&text).expect_err("a typo is refused");
    for phrase in [
        "line 10",
        "redact_column = [\"key_hash\"]",
        "unknown field `redact_column`",
    ] {
        assert!(e.contains(phrase), "{e:?} does not contain {phrase:?}");
    }
}

/// A table named with SQL quoting (a habit) is not found; the hint gives the name as the config wants it.
#[test]
fn a_quoted_table_name_is_answered_with_the_name_as_written() {
    let (schema, table) = super::split_table(r#""Fin Ops"."Ledger Ëntries""#);
    assert_eq!(
        super::dotted_hint(schema, table),
        r#" (names are written as they are, without SQL quotes: table = "Fin Ops.Ledger Ëntries")"#
    );
    let (schema, table) = super::split_table(r#"public."My ""Table""""#);
    assert!(
        super::dotted_hint(schema, table).contains(r#"table = "public.My \"Table\"""#),
        "{}",
        super::dotted_hint(schema, table)
    );
    assert_eq!(super::dotted_hint("public", "plain"), "");
}

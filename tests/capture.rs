//! End-to-end capture on real Postgres and ClickHouse servers.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const API_KEYS: &str = r#"
[[tables]]
table = "public.api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["updated_at"]
redact_columns = ["key_hash"]
soft_delete_column = "deleted_at"

[[tables.derived_actions]]
action = "AUDIT_ACTION_ROTATED"
changed = ["key_hash"]

[[tables.derived_actions]]
action = "AUDIT_ACTION_DISABLED"
column = "enabled"
from = true
to = false
"#;

const API_KEYS_DDL: &str = "CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id text NOT NULL,
    project_id text,
    name text NOT NULL,
    key_hash text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_with_mapping_rules() {
    let env = TestEnv::new("t_actions").await;
    let db = env.pg().await;
    db.batch_execute(API_KEYS_DDL).await.unwrap();
    let run = Running::start(env.config(API_KEYS));
    env.wait_for(0).await;
    // Wait until streaming (the slot exists) before changing rows.
    wait_slot(&db, "slot_t_actions").await;

    db.batch_execute(
        "INSERT INTO api_keys (id, org_id, project_id, name, key_hash) VALUES
           ('00000000-0000-0000-0000-000000000001', 'org1', 'p1', 'prod-key-1', 'hash-secret-1');
         UPDATE api_keys SET updated_at = now() + interval '1 minute';
         UPDATE api_keys SET name = 'prod-key-1b', updated_at = now();
         UPDATE api_keys SET key_hash = 'hash-secret-2';
         UPDATE api_keys SET enabled = false;
         UPDATE api_keys SET deleted_at = now();
         UPDATE api_keys SET deleted_at = NULL;
         DELETE FROM api_keys;",
    )
    .await
    .unwrap();
    env.wait_for(7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items = env.items().await;
    let actions: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "AUDIT_ACTION_CREATED",
            "AUDIT_ACTION_UPDATED",
            "AUDIT_ACTION_ROTATED",
            "AUDIT_ACTION_DISABLED",
            "AUDIT_ACTION_DELETED",
            "AUDIT_ACTION_RESTORED",
            "AUDIT_ACTION_DELETED",
        ],
        "the updated_at-only update yields no item"
    );
    for i in &items {
        assert_eq!(i.resource_type, "RESOURCE_TYPE_API_KEY");
        assert_eq!(i.resource_id, "00000000-0000-0000-0000-000000000001");
        assert_eq!(i.organization_id, "org1");
        assert_eq!(i.project_id, "p1");
        assert_eq!(i.table_name, "public.api_keys");
        assert_eq!(i.principal_type, "UNKNOWN");
        assert!(
            !i.diff.contains("hash-secret"),
            "redacted value leaked: {}",
            i.diff
        );
        assert!(!i.changed_fields.contains(&"updated_at".to_owned()));
    }
    assert_eq!(items[0].resource_display, "prod-key-1");
    assert_eq!(items[1].resource_display, "prod-key-1b");
    let created = items[0].diff_json();
    assert_eq!(created["name"], json!({"after": "prod-key-1"}));
    assert_eq!(created["key_hash"], json!({"redacted": true}));
    assert_eq!(created["enabled"], json!({"after": true}));
    assert!(created.get("updated_at").is_none());
    assert_eq!(items[1].changed_fields, ["name"]);
    assert_eq!(
        items[1].diff_json(),
        json!({"name": {"before": "prod-key-1", "after": "prod-key-1b"}})
    );
    assert_eq!(items[2].changed_fields, ["key_hash"]);
    assert_eq!(
        items[2].diff_json(),
        json!({"key_hash": {"redacted": true}})
    );
    assert_eq!(
        items[3].diff_json(),
        json!({"enabled": {"before": true, "after": false}})
    );
    let deleted = items[6].diff_json();
    assert_eq!(deleted["name"], json!({"before": "prod-key-1b"}));
    // Items of one transaction share the event id; items differ in id.
    assert!(items.iter().all(|i| i.event_id == items[0].event_id));
    let ids: std::collections::HashSet<_> = items.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), items.len());
    run.stop().await.unwrap();
}

pub async fn wait_slot(db: &tokio_postgres::Client, slot: &str) {
    for _ in 0..600 {
        let r = db
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if let Some(r) = r {
            if r.get::<_, bool>(0) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("slot {slot} never became active");
}

//! Winding the copy of the platform tables back to an earlier position of the stream.

use super::*;
use crate::audit::attribution::platform_lookup_for_tests as lookup;
use crate::audit::attribution::{PlatformTables, Rewinding, Rewound};
use crate::capture::pgoutput::{LogicalMessage, OldKind};

fn tables() -> PlatformTables {
    let cfg = config(
        "[attribution.sessions]\ntable = \"sessions\"\naccount_column = \"account_id\"\n\
         [[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_T\"\n",
    );
    let mut p = PlatformTables::new(&cfg);
    // As the table is now.
    p.fill(
        0,
        vec![
            vec![Some("s_moved".into()), Some("alice".into())],
            vec![Some("s_new".into()), Some("eve".into())],
            vec![Some("s_renamed2".into()), Some("dave".into())],
            vec![Some("s_nofull".into()), Some("frank".into())],
        ],
    );
    p
}

#[test]
fn each_row_goes_back_to_what_its_first_change_since_says() {
    let rel = relation(300, "sessions", &[("id", TEXT), ("account_id", TEXT)]);
    let row = |id: &str, acct: &str| vec![t(id), t(acct)];
    let changes = vec![
        LogicalMessage::Relation(rel.clone()),
        // Ended: the delete's old row is what it was.
        LogicalMessage::Delete {
            relation_id: 300,
            old_kind: OldKind::Full,
            old: row("s_ended", "carol"),
        },
        // Moved twice: the first change's old row counts, not the second's.
        LogicalMessage::Update {
            relation_id: 300,
            old: Some((OldKind::Full, row("s_moved", "bob"))),
            new: row("s_moved", "mallory"),
        },
        LogicalMessage::Update {
            relation_id: 300,
            old: Some((OldKind::Full, row("s_moved", "mallory"))),
            new: row("s_moved", "alice"),
        },
        // Begun since: it was not there.
        LogicalMessage::Insert {
            relation_id: 300,
            new: row("s_new", "eve"),
        },
        // Its key changed: the new key was not there, the old one was.
        LogicalMessage::Update {
            relation_id: 300,
            old: Some((OldKind::Full, row("s_renamed1", "dave"))),
            new: row("s_renamed2", "dave"),
        },
        // Without REPLICA IDENTITY FULL the update carries no old row: kept as it is now, counted.
        LogicalMessage::Update {
            relation_id: 300,
            old: None,
            new: row("s_nofull", "frank"),
        },
        // Another table's changes are not the sessions'.
        LogicalMessage::Insert {
            relation_id: 999,
            new: row("s_other", "x"),
        },
    ];
    let mut p = tables();
    let mut r = Rewinding::default();
    for m in &changes {
        p.rewind_step(&mut r, m);
    }
    assert_eq!(
        r.done,
        Rewound {
            restored: 5,
            unknown: 1
        }
    );
    assert_eq!(lookup(&p, "s_ended").as_deref(), Some("carol"));
    assert_eq!(lookup(&p, "s_moved").as_deref(), Some("bob"));
    assert_eq!(lookup(&p, "s_new"), None);
    assert_eq!(lookup(&p, "s_renamed1").as_deref(), Some("dave"));
    assert_eq!(lookup(&p, "s_renamed2"), None);
    assert_eq!(lookup(&p, "s_nofull").as_deref(), Some("frank"));
    assert_eq!(lookup(&p, "s_other"), None);
}

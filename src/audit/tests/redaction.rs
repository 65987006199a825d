//! The redaction baseline remembered across restarts: a secret column renamed, or dropped for a new one,
//! while capture was stopped is found at the next start by column number; healthy restarts pass.

use super::{config, info};
use crate::audit::redaction::{Baseline, SecretCopies};
use crate::capture::catalog::TableInfo;
use crate::config::TableConfig;

fn tables(redact: &str, optional: &str) -> Vec<TableConfig> {
    config(&format!(
        "[[tables]]\ntable = \"gateways\"\nresource_type = \"RESOURCE_TYPE_GATEWAY\"\n\
         display_column = \"name\"\nignore_columns = [\"etag\"]\n\
         redact_columns = [{redact}]\noptional_columns = [{optional}]\n"
    ))
    .tables
}

/// The table as the catalog has it: (attnum, name) of each live column.
fn table(cols: &[(i16, &str)]) -> TableInfo {
    let names: Vec<&str> = cols.iter().map(|(_, c)| *c).collect();
    let mut i = info(true, &["id"], &names);
    i.attnums = cols.iter().map(|(n, _)| *n).collect();
    i.oid = 16_400;
    i
}

const START: &[(i16, &str)] = &[(1, "id"), (2, "name"), (3, "secret_a"), (4, "secret_b")];

fn changed(cfg: &[TableConfig], now: &[(i16, &str)]) -> Vec<String> {
    let two = tables(r#""secret_a", "secret_b""#, "");
    let was = Baseline::of(&two, &[table(START)]);
    // Through the stored form, as a restart reads it.
    let was = Baseline::parse(&was.to_json(), "src", None).expect("its own baseline reads back");
    was.changed_since(cfg, &[table(now)])
}

#[test]
fn a_redacted_column_renamed_while_stopped_is_refused_until_the_config_names_it() {
    let same = tables(r#""secret_a", "secret_b""#, "");
    let renamed = &[(1, "id"), (2, "name"), (3, "token"), (4, "secret_b")];
    let e = changed(&same, renamed);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(r#""secret_a" → "token""#), "{}", e[0]);
    assert!(
        e[0].contains("Add the new name to redact_columns"),
        "{}",
        e[0]
    );
    // Names swapped: every redacted name still there, the secret under an unredacted one.
    let swapped = &[(1, "id"), (2, "secret_a"), (3, "name"), (4, "secret_b")];
    assert!(changed(&same, swapped)[0].contains(r#""secret_a" → "name""#));
    // The config names the new name: proceeds (and the next baseline remembers it).
    let fixed = tables(r#""secret_a", "token", "secret_b""#, r#""secret_a""#);
    assert!(changed(&fixed, renamed).is_empty());
    // Renamed into an ignored column (never stored), or the operator takes it out of redaction: proceeds.
    let ignored = &[(1, "id"), (2, "name"), (3, "etag"), (4, "secret_b")];
    assert!(changed(&same, ignored).is_empty());
    assert!(changed(&tables(r#""secret_b""#, ""), renamed).is_empty());
}

#[test]
fn a_redacted_column_dropped_for_a_new_one_is_refused_until_the_config_says_which() {
    let same = tables(r#""secret_a", "secret_b""#, r#""secret_a""#);
    let moved = &[(1, "id"), (2, "name"), (4, "secret_b"), (5, "token")];
    let e = changed(&same, moved);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains(
            "redacted column(s) secret_a dropped and column(s) token of the same kind of type added"
        ),
        "{}",
        e[0]
    );
    // Either answer the message asks for lets the start go on.
    let redacts_new = tables(r#""secret_a", "token", "secret_b""#, r#""secret_a""#);
    assert!(changed(&redacts_new, moved).is_empty());
    assert!(changed(&tables(r#""secret_b""#, ""), moved).is_empty());
    // Dropped and added again under its own name: still redacted.
    let again = &[(1, "id"), (2, "name"), (4, "secret_b"), (5, "secret_a")];
    assert!(changed(&same, again).is_empty());
    // Dropped with nothing added, or a column added with nothing dropped: nothing can carry the secret.
    assert!(changed(&same, &[(1, "id"), (2, "name"), (4, "secret_b")]).is_empty());
    let added = &[
        (1, "id"),
        (2, "name"),
        (3, "secret_a"),
        (4, "secret_b"),
        (5, "notes"),
    ];
    assert!(changed(&same, added).is_empty());
    // An old ordinary column dropped beside: not a redacted one, not counted.
    assert!(changed(
        &same,
        &[(1, "id"), (3, "secret_a"), (4, "secret_b"), (5, "x")]
    )
    .is_empty());
}

#[test]
fn only_the_same_table_is_compared_and_a_store_row_that_cannot_be_read_stops_the_start() {
    let same = tables(r#""secret_a", "secret_b""#, "");
    // A table dropped and created again numbers its columns afresh: not compared (its redacted names are
    // checked as at any start).
    let two = tables(r#""secret_a", "secret_b""#, "");
    let was = Baseline::of(&two, &[table(START)]);
    let mut recreated = table(&[(1, "id"), (2, "name"), (3, "token"), (4, "secret_b")]);
    recreated.oid = 16_999;
    assert!(was.changed_since(&same, &[recreated]).is_empty());
    // Nothing remembered for a table: nothing to compare.
    assert!(Baseline::default()
        .changed_since(&same, &[table(START)])
        .is_empty());
    for bad in ["{", r#"{"v":9,"tables":{}}"#, r#"{"v":1}"#, "[]"] {
        let e = Baseline::parse(bad, "sys/db/o'slot", None).unwrap_err();
        assert!(
            e.contains("cannot be read") && e.contains(r"source_id = 'sys/db/o\'slot'"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn only_a_new_column_of_the_dropped_secrets_type_is_suspect_and_acceptance_is_remembered() {
    const TEXT: u32 = 25;
    const TIMESTAMPTZ: u32 = 1184;
    let typed = |cols: &[(i16, &str, u32)]| {
        let mut i = table(&cols.iter().map(|(n, c, _)| (*n, *c)).collect::<Vec<_>>());
        let category = |t: u32| if t == TIMESTAMPTZ { 'D' } else { 'S' };
        i.column_types = cols.iter().map(|(_, _, t)| (*t, category(*t))).collect();
        i
    };
    let same = tables(r#""secret_a", "secret_b""#, r#""secret_a""#);
    let start = typed(&[
        (1, "id", TEXT),
        (2, "name", TEXT),
        (3, "secret_a", TEXT),
        (4, "secret_b", TEXT),
    ]);
    let was = Baseline::of(&same, std::slice::from_ref(&start));
    // The README's recipe for a dropped secret (kept redacted and optional) beside an unrelated column
    // added meanwhile: a timestamp cannot be where a text secret went.
    let stamped = typed(&[
        (1, "id", TEXT),
        (2, "name", TEXT),
        (4, "secret_b", TEXT),
        (5, "created_at", TIMESTAMPTZ),
    ]);
    assert!(was
        .changed_since(&same, std::slice::from_ref(&stamped))
        .is_empty());
    // A string column could be (varchar as much as text): refused, and the message names the way out when
    // no secret moved.
    let varchar = typed(&[
        (1, "id", TEXT),
        (2, "name", TEXT),
        (4, "secret_b", TEXT),
        (5, "token", 1043),
    ]);
    assert_eq!(
        was.changed_since(&same, std::slice::from_ref(&varchar))
            .len(),
        1
    );
    let noted = typed(&[
        (1, "id", TEXT),
        (2, "name", TEXT),
        (4, "secret_b", TEXT),
        (5, "notes", TEXT),
    ]);
    let e = was.changed_since(&same, std::slice::from_ref(&noted));
    assert!(e[0].contains("--accept-columns"), "{e:?}");
    // A start whose config does not redact the table keeps what was remembered of it, so a rename
    // later is still found.
    let none = tables(r#""other""#, r#""other""#);
    let kept = Baseline::of(&none, &[]).carrying(Some(was.clone()), &none, &[]);
    assert_eq!(kept.tables, was.tables);
    let renamed = typed(&[
        (1, "id", TEXT),
        (2, "name", TEXT),
        (3, "token", TEXT),
        (4, "secret_b", TEXT),
    ]);
    assert_eq!(
        kept.changed_since(&same, std::slice::from_ref(&renamed))
            .len(),
        1
    );
    // What this start knows replaces what was remembered of the same table (a baseline read without its
    // seal carries no drop on).
    let now = Baseline::of(&same, std::slice::from_ref(&stamped)).carrying(
        Some(was.clone()),
        &same,
        std::slice::from_ref(&stamped),
    );
    assert_eq!(
        now.tables,
        Baseline::of(&same, std::slice::from_ref(&stamped)).tables
    );
}

/// A redacted column dropped is told from one misspelt or renamed by its number, kept by Postgres as
/// dropped, as a sealed baseline remembers it; in the stream, only a change whose every column is a column
/// of the table now that existed beside the secret, read after a start saw the secret live, proves that
/// the secret is not in it under another name.
#[test]
fn a_drop_is_proven_only_by_a_sealed_baseline_and_the_changes_own_columns() {
    use crate::audit::attribution::seal::SealKey;
    use crate::capture::catalog::NumberedColumn;
    const TIMESTAMPTZ: u32 = 1184;
    let key = SealKey::new(b"event-secret");
    let same = tables(r#""secret_a", "secret_b""#, r#""secret_a""#);
    let with_types = |cols: &[(i16, &str)], dropped: &[i16]| {
        let mut i = table(cols);
        i.column_types = cols.iter().map(|_| (TEXT, 'S')).collect();
        i.dropped_attnums = dropped.to_vec();
        i
    };
    let start = with_types(
        &[(1, "id"), (2, "name"), (3, "secret_a"), (4, "secret_b")],
        &[],
    );
    let first = Baseline::of(&same, std::slice::from_ref(&start))
        .seen_at(100, std::slice::from_ref(&start))
        .carrying(None, &same, std::slice::from_ref(&start));
    let stored = first.sealed_json(&key, "src");
    let was = Baseline::parse(&stored, "src", Some(&key)).expect("its own seal holds");
    assert!(was.sealed);
    // The seal holds only for this source, this key and these contents.
    for (text, source, k) in [
        (stored.clone(), "other", &key),
        (stored.clone(), "src", &SealKey::new(b"another secret")),
        (stored.replace("\"attnum\":3", "\"attnum\":9"), "src", &key),
    ] {
        let e = Baseline::parse(&text, source, Some(k)).unwrap_err();
        assert!(e.contains("seal does not hold"), "{e}");
    }
    // Without its seal: read, compared, but proving nothing.
    let unsealed = Baseline::parse(&first.to_json(), "src", Some(&key)).unwrap();
    assert!(!unsealed.sealed);
    // secret_a dropped: Postgres keeps number 3 as dropped.
    let after = with_types(&[(1, "id"), (2, "name"), (4, "secret_b")], &[3]);
    assert_eq!(was.dropped(&same[0], &after), vec!["secret_a".to_owned()]);
    assert!(unsealed.dropped(&same[0], &after).is_empty());
    // A number the catalog does not keep as dropped (a baseline entry made up) proves nothing.
    let not_kept = with_types(&[(1, "id"), (2, "name"), (4, "secret_b")], &[]);
    assert!(was.dropped(&same[0], &not_kept).is_empty());
    // A rename keeps the number: no drop.
    let renamed = with_types(
        &[(1, "id"), (2, "name"), (3, "token"), (4, "secret_b")],
        &[],
    );
    assert!(was.dropped(&same[0], &renamed).is_empty());
    // The start after the drop carries it on, marked, with where it was seen live; and the next one too.
    let now = Baseline::of(&same, std::slice::from_ref(&after))
        .seen_at(300, std::slice::from_ref(&after))
        .carrying(Some(was.clone()), &same, std::slice::from_ref(&after));
    let entry = |b: &Baseline, name: &str| {
        b.tables["."]
            .redacted
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.dropped, c.seen_at_lsn, c.live_max))
    };
    assert_eq!(entry(&now, "secret_a"), Some((true, 100, 4)));
    assert_eq!(entry(&now, "secret_b"), Some((false, 300, 4)));
    let again = Baseline::parse(&now.sealed_json(&key, "src"), "src", Some(&key)).unwrap();
    let next = Baseline::of(&same, std::slice::from_ref(&after))
        .seen_at(400, std::slice::from_ref(&after))
        .carrying(Some(again), &same, std::slice::from_ref(&after));
    assert_eq!(entry(&next, "secret_a"), Some((true, 100, 4)));
    let gone = |b: &Baseline| {
        b.tables["."]
            .redacted
            .iter()
            .find(|c| c.name == "secret_a")
            .map(|c| c.gone_at_lsn)
    };
    // The first start that found it dropped says where it was gone by; the next keeps that.
    assert_eq!((gone(&now), gone(&next)), (Some(300), Some(300)));
    // A config that no longer redacts the name forgets it; a name never remembered is no drop.
    let without = tables(r#""secret_b""#, "");
    let forgot = Baseline::of(&without, std::slice::from_ref(&after)).carrying(
        Some(was.clone()),
        &without,
        std::slice::from_ref(&after),
    );
    assert_eq!(entry(&forgot, "secret_a"), None);
    let typo = tables(r#""secret_c", "secret_b""#, r#""secret_c""#);
    assert!(now.dropped(&typo[0], &after).is_empty());
    // In the stream: the table's columns by number now; a column "note" added after the drop.
    let col = |attnum: i16, name: &str, type_oid: u32| NumberedColumn {
        attnum,
        name: name.to_owned(),
        dropped: name.is_empty(),
        generated: false,
        type_oid,
    };
    let numbered = [
        col(1, "id", TEXT),
        col(2, "name", TEXT),
        col(3, "", 0),
        col(4, "secret_b", TEXT),
        col(5, "note", TEXT),
        col(6, "created", TIMESTAMPTZ),
    ];
    let after_note = with_types(
        &[(1, "id"), (2, "name"), (4, "secret_b"), (5, "note")],
        &[3],
    );
    let at = |shown: &[(&str, u32)], position: u64| {
        now.dropped_at(&same[0], &after_note, &numbered, shown, position)
    };
    let plain = [("id", TEXT), ("name", TEXT), ("secret_b", TEXT)];
    assert_eq!(at(&plain, 150), vec!["secret_a".to_owned()]);
    // Before the start that saw it live: the columns then are not known.
    assert!(at(&plain, 50).is_empty());
    // A name of a column added since (it could be the secret renamed, dropped, and the name used again).
    let with_note = [
        ("id", TEXT),
        ("name", TEXT),
        ("note", TEXT),
        ("secret_b", TEXT),
    ];
    assert!(at(&with_note, 150).is_empty());
    // Committed after a start found the column dropped: it cannot be in the change, whatever its names.
    assert_eq!(at(&with_note, 300), vec!["secret_a".to_owned()]);
    assert!(at(&with_note, 299).is_empty());
    // Every change owes the proof, whatever redacted names it carries (QA22): the secret under its own
    // name before the drop, in its place, is proven; swapped with `name` (the names out of their columns'
    // order) it is not, nor beside a column added since under its name.
    let proof = |shown: &[(&str, u32)]| {
        now.drop_proof(
            &same[0],
            &after_note,
            &numbered,
            shown,
            150,
            &Default::default(),
        )
    };
    let own = proof(&[
        ("id", TEXT),
        ("name", TEXT),
        ("secret_a", TEXT),
        ("secret_b", TEXT),
    ]);
    assert!(own.unproven.is_empty() && own.absent.is_empty(), "{own:?}");
    let swapped = proof(&[
        ("id", TEXT),
        ("secret_a", TEXT),
        ("name", TEXT),
        ("secret_b", TEXT),
    ]);
    assert_eq!(swapped.unproven, vec!["secret_a".to_owned()]);
    let beside_new = proof(&[
        ("id", TEXT),
        ("name", TEXT),
        ("old", TEXT),
        ("secret_b", TEXT),
        ("note", TEXT),
    ]);
    assert_eq!(beside_new.unproven, vec!["secret_a".to_owned()]);
    // One more column of then than the table has (the secret under a live column's name).
    let over = proof(&[
        ("id", TEXT),
        ("name", TEXT),
        ("name", TEXT),
        ("secret_b", TEXT),
    ]);
    assert_eq!(over.unproven, vec!["secret_a".to_owned()]);
    // Read dropped by this process at 120: a change from then on, with columns of the table now, is proven.
    let noticed: std::collections::BTreeMap<i16, u64> = [(3, 120)].into();
    let later = now.drop_proof(
        &same[0],
        &after_note,
        &numbered,
        &with_note_order(),
        130,
        &noticed,
    );
    assert_eq!(later.absent, vec!["secret_a".to_owned()]);
    let earlier = now.drop_proof(
        &same[0],
        &after_note,
        &numbered,
        &with_note_order(),
        110,
        &noticed,
    );
    assert_eq!(earlier.unproven, vec!["secret_a".to_owned()]);
    // A name no column has now, or a type not the column's.
    assert!(at(&[("id", TEXT), ("name", TEXT), ("token", TEXT)], 150).is_empty());
    assert!(at(&[("id", TEXT), ("name", TIMESTAMPTZ)], 150).is_empty());
    // A generated column is never sent: a change naming one carries some other column under its name.
    // ("name" generated, as it existed at that start: a change naming it carries the secret renamed.)
    let with_generated: Vec<NumberedColumn> = numbered
        .iter()
        .cloned()
        .map(|c| NumberedColumn {
            generated: c.name == "name",
            ..c
        })
        .collect();
    assert!(now
        .dropped_at(&same[0], &after_note, &with_generated, &plain, 150)
        .is_empty());
    // A column generated when the secret was seen live was never sent beside it: made plain since
    // (`DROP EXPRESSION`), its name in a change vouches for nothing.
    let mut start_gen = with_types(
        &[(1, "id"), (2, "name"), (3, "secret_a"), (4, "secret_b")],
        &[],
    );
    start_gen.generated = vec!["name".to_owned()];
    let was_gen = Baseline::parse(
        &Baseline::of(&same, std::slice::from_ref(&start_gen))
            .seen_at(100, std::slice::from_ref(&start_gen))
            .carrying(None, &same, std::slice::from_ref(&start_gen))
            .sealed_json(&key, "src"),
        "src",
        Some(&key),
    )
    .unwrap();
    assert!(was_gen
        .dropped_at(&same[0], &after_note, &numbered, &plain, 150)
        .is_empty());
    assert_eq!(
        was.dropped_at(&same[0], &after_note, &numbered, &plain, 150),
        vec!["secret_a".to_owned()]
    );
    // What an unsealed baseline says of a table this start does not redact is carried on (renames), but
    // never as a proof once the new baseline is sealed.
    let mut forged = now.clone();
    forged.sealed = false;
    let none = tables(r#""other""#, r#""other""#);
    let laundered = Baseline::of(&none, &[]).carrying(Some(forged), &none, &[]);
    assert!(laundered.sealed);
    assert_eq!(entry(&laundered, "secret_a"), Some((false, 0, 0)));
    assert!(laundered.dropped(&same[0], &after).is_empty());
}

const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;

/// The columns of a relation by number: (attnum, name, dropped), text unless dropped.
fn numbered(cols: &[(i16, &str, bool)]) -> Vec<crate::capture::catalog::NumberedColumn> {
    cols.iter()
        .map(|(n, c, d)| crate::capture::catalog::NumberedColumn {
            attnum: *n,
            name: c.to_string(),
            dropped: *d,
            generated: false,
            type_oid: if *d { 0 } else { TEXT },
        })
        .collect()
}

fn hides_typed(
    shown: &[(&str, u32)],
    table: &[crate::capture::catalog::NumberedColumn],
) -> Option<(String, String)> {
    crate::audit::redaction::relation_hides_secret(
        shown,
        table,
        |c| c == "secret",
        |c| c == "secret" || c == "etag",
    )
    .into_iter()
    .next()
}

fn hides(shown: &[&str], table: &[(i16, &str, bool)]) -> Option<(String, String)> {
    let shown: Vec<(&str, u32)> = shown.iter().map(|c| (*c, TEXT)).collect();
    hides_typed(&shown, &numbered(table))
}

/// A Relation from a time the names were swapped, rotated or undone (the catalog as it is now cannot
/// show it), against the routine migrations that must pass.
#[test]
fn a_relation_carrying_a_secret_under_another_name_is_found_by_column_number() {
    let now = [
        (1, "id", false),
        (2, "label", false),
        (3, "secret", false),
        (4, "note", false),
    ];
    // As the table is: nothing.
    assert_eq!(hides(&["id", "label", "secret", "note"], &now), None);
    // Swapped (and swapped back since): the secret's number under "note".
    assert_eq!(
        hides(&["id", "label", "note", "secret"], &now),
        Some(("note".into(), "secret".into()))
    );
    // Rotated through a fresh name: secret → x_tmp, note → secret.
    assert_eq!(
        hides(&["id", "label", "x_tmp", "secret"], &now),
        Some(("x_tmp".into(), "secret".into()))
    );
    // Three names cycled.
    assert!(hides(&["id", "secret", "note", "label"], &now).is_some());
    // A column dropped before them gives no cover.
    let after_drop = [
        (1, "id", false),
        (2, "old", true),
        (3, "secret", false),
        (4, "note", false),
    ];
    assert!(hides(&["id", "note", "secret"], &after_drop).is_some());
    // Swapped with an ignored column (never stored): nothing.
    let with_etag = [(1, "id", false), (2, "secret", false), (3, "etag", false)];
    assert_eq!(hides(&["id", "etag", "secret"], &with_etag), None);
    // Routine: a column's type changed by add, copy, drop, rename back (the old one dropped before the
    // secret): the change before it lists the old column, of the old type, which is the dropped number.
    let mut retyped = numbered(&[
        (1, "id", false),
        (2, "........pg.dropped.2........", true),
        (3, "secret", false),
        (4, "note", false),
        (5, "label", false),
    ]);
    retyped[4].type_oid = VARCHAR;
    let before: Vec<(&str, u32)> = ["id", "label", "secret", "note"]
        .iter()
        .map(|c| (*c, TEXT))
        .collect();
    assert_eq!(hides_typed(&before, &retyped), None);
    let after = [
        ("id", TEXT),
        ("secret", TEXT),
        ("note", TEXT),
        ("label", VARCHAR),
    ];
    assert_eq!(hides_typed(&after, &retyped), None);
    // Routine: an ordinary column renamed since (and another added): it sits between the same neighbours.
    let renamed = [
        (1, "id", false),
        (2, "title", false),
        (3, "secret", false),
        (4, "note", false),
        (5, "extra", false),
    ];
    assert_eq!(hides(&["id", "label", "secret", "note"], &renamed), None);
    // Routine: the secret itself renamed to a redacted name (the config names both): covered.
    let to_redacted = [
        (1, "id", false),
        (2, "label", false),
        (3, "api_secret", false),
    ];
    assert_eq!(hides(&["id", "label", "secret"], &to_redacted), None);
    // Columns dropped or added since, no rename: nothing.
    let dropped = [
        (1, "id", false),
        (2, "x", true),
        (3, "secret", false),
        (4, "y", true),
    ];
    assert_eq!(hides(&["id", "old", "secret", "older"], &dropped), None);
    assert_eq!(hides(&["id", "label"], &now), None);
}

/// A secret copied into an ordinary column is recognised in the forms a migration or a mistake gives it,
/// and values that merely share short pieces with it are not.
#[test]
fn a_secrets_copies_are_recognised_converted() {
    let secret: &[u8] = b"sk_live_9f8e7d6c5b4a";
    let s = SecretCopies::of([secret]);
    let found = |v: &str| s.within(v.as_bytes());
    // As it is, wrapped by to_jsonb or a JSON literal, padded by char(n), prefixed, trimmed.
    for copy in [
        "sk_live_9f8e7d6c5b4a",
        "\"sk_live_9f8e7d6c5b4a\"",
        r#"{"token": "sk_live_9f8e7d6c5b4a", "n": 1}"#,
        "sk_live_9f8e7d6c5b4a          ",
        "Bearer sk_live_9f8e7d6c5b4a",
    ] {
        assert!(found(copy), "{copy}");
    }
    // convert_to(secret, 'UTF8') shows as bytea text; encode(…, 'hex' | 'base64').
    let hex = crate::audit::attribution::seal::hex(secret);
    assert!(found(&format!("\\x{hex}")));
    assert!(found(&hex));
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret);
    assert!(found(&b64), "{b64}");
    // Not copies: another value, a piece shorter than the shortest secret compared.
    for plain in ["sk_live_", "9f8e7d6c", "sk_test_0000000000", "", "active"] {
        assert!(!found(plain), "{plain}");
    }

    // A secret with spaces around it is found trimmed; one JSON-escaped in a jsonb copy too.
    let s = SecretCopies::of([&b"  pa\"ss-word-1  "[..]]);
    assert!(s.within(b"pa\"ss-word-1"));
    assert!(s.within(br#"{"p": "pa\"ss-word-1"}"#));

    // A JSON secret: each string in it is a secret; its keys are not.
    let s = SecretCopies::of([&br#"{"client_secret": "c5e3a1b2d4f6", "id": 7}"#[..]]);
    assert!(s.within(b"c5e3a1b2d4f6"));
    assert!(!s.within(b"client_secret"));

    // A bytea secret's bytes and hex digits, copied by convert_from / encode.
    let s = SecretCopies::of([&b"\\x00ff10203040506070"[..]]);
    assert!(s.within(b"00ff10203040506070"));
    assert!(s.within(&[0x00, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70]));

    // Short secrets ('1', 'active') hide nothing; nor do blank ones (an empty char(n) secret).
    assert!(SecretCopies::of([&b"active"[..], &b"1"[..]]).is_empty());
    assert!(SecretCopies::of([&b"          "[..]]).is_empty());
}

/// The forms exploratory QA round 13 found missing: each as Postgres writes it.
#[test]
fn a_secrets_copies_are_recognised_the_way_postgres_writes_them() {
    let found = |secret: &[u8], copy: &[u8]| SecretCopies::of([secret]).within(copy);
    // A JSON secret's string with a quote, copied as JSON (jsec->'a'->'tok', jsonb_build_object).
    let jsec = br#"{"a": {"tok": "SECRET-J02-abc\"def"}, "n": 98765432109877}"#;
    assert!(found(jsec, br#""SECRET-J02-abc\"def""#));
    assert!(found(jsec, br#"{"copy": {"tok": "SECRET-J02-abc\"def"}}"#));
    // ... its number, and its string hex-encoded.
    assert!(found(jsec, b"98765432109877"));
    let leaf_hex = crate::audit::attribution::seal::hex(b"SECRET-J02-abc\"def");
    assert!(found(jsec, leaf_hex.as_bytes()));
    // A JSON string secret (a jsonb scalar), copied with #>> '{}'.
    assert!(found(
        br#""SECRET-J06-jsonstring\u00e9\n""#,
        "SECRET-J06-jsonstringé\n".as_bytes()
    ));
    // A JSON secret nested deeper than a parser goes.
    let deep = format!(
        "{}\"SECRET-H01-deep\"{}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(found(deep.as_bytes(), b"SECRET-H01-deep copy"));
    // A bytea secret's bytes as base64 (encode(bsec, 'base64')).
    assert!(found(
        b"\\xdeadbeef00112233445566778899",
        b"3q2+7wARIjNEVWZ3iJk="
    ));
    // In a text[]: quotes and backslashes escaped, a newline kept (a PEM key).
    let pem: &[u8] = b"SECRET-12 q\"b\\s\nx";
    assert!(found(pem, b"{\"SECRET-12 q\\\"b\\\\s\nx\",x}"));
    // encode(convert_to(secret, 'UTF8'), 'escape') of a non-ASCII secret.
    assert!(found(
        "SECRET-10-éèà-unicode".as_bytes(),
        br"SECRET-10-\303\251\303\250\303\240-unicode"
    ));
    // base64 after a prefix (HTTP Basic style: 'Bearer ' || secret).
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"Bearer SECRET-20-plainvalue",
    );
    assert!(found(b"SECRET-20-plainvalue", b64.as_bytes()), "{b64}");
    for prefix in ["x", "xy", "xyz", "Basic: "] {
        let b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{prefix}SECRET-20-plainvalue and more").as_bytes(),
        );
        assert!(
            found(b"SECRET-20-plainvalue", b64.as_bytes()),
            "{prefix}: {b64}"
        );
    }
    // quote_literal and format('%I').
    assert!(found(b"SECRET-19 it's", b"'SECRET-19 it''s'"));
    assert!(found(b"SECRET-13 q\"b", b"\"SECRET-13 q\"\"b\""));
    // Not copies: a value sharing the JSON secret's keys only.
    assert!(!found(jsec, b"tok and a"));
    // A JSON secret of many strings (its forms sought in one pass): each is found, nothing else.
    let many: String = format!(
        "{{{}}}",
        (0..40)
            .map(|i| format!("\"k{i}\": \"leaf-secret-{i:04}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in [0, 17, 39] {
        assert!(found(
            many.as_bytes(),
            format!("x leaf-secret-{i:04} y").as_bytes()
        ));
    }
    assert!(!found(many.as_bytes(), b"leaf-secret-9999"));
}

/// The columns of the table after `note` was added, in their order.
fn with_note_order() -> Vec<(&'static str, u32)> {
    vec![
        ("id", TEXT),
        ("name", TEXT),
        ("secret_b", TEXT),
        ("note", TEXT),
    ]
}

//! Postgres text-format values to JSON, keeping their meaning: numbers stay numbers, `numeric` stays an exact
//! decimal string, json stays structure, arrays stay arrays. Anything unknown keeps its text form.
//!
//! The type of a column comes from its OID; OIDs outside the built-in set (enums, domains, arrays of those,
//! extension types) are resolved once through `pg_type` and cached, so new types added while streaming work.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;

use crate::capture::catalog::TypeRow;

/// The most of an over-long text field kept in an item, before its marker.
const CUT_KEEP_BYTES: usize = 1024;

/// A text field stored in an item (a snapshot field: id, display name, organization, project; or an actor
/// field: from a context message or the platform's tables) longer than `limit` bytes: cut at a character
/// boundary to at most 1 KiB and marked `… [truncated: N bytes]` with its full size, so the item stays
/// readable and bounded and nobody takes the cut value for the real one.
pub fn bounded_text(s: String, limit: usize) -> String {
    if s.len() <= limit {
        return s;
    }
    cut_text(&s, limit)
}

/// [`bounded_text`] of a borrowed text: copies at most the part kept, however long the text is.
pub fn bounded_str(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    cut_text(s, limit)
}

fn cut_text(s: &str, limit: usize) -> String {
    format!("{}… [truncated: {} bytes]", kept(s, limit), s.len())
}

/// The part of a cut text that is kept: at most 1 KiB, at a character boundary.
fn kept(s: &str, limit: usize) -> &str {
    let mut cut = limit.min(CUT_KEEP_BYTES);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// [`bounded_text`] for a row's snapshot fields (its id, organization, project, display name, actor
/// columns): the marker also carries the start of the whole value's SHA-256, so that two long values
/// that share their first kilobyte stay two ids, two organizations (QA41 M4).
pub fn bounded_snapshot(s: String, limit: usize) -> String {
    if s.len() <= limit {
        return s;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(s.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}… [truncated: {} bytes, sha256 {hash}…]",
        kept(&s, limit),
        s.len()
    )
}

/// How to render a value of one Postgres type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int,
    Float,
    /// Exact decimal, kept as a string (also NaN and ±Infinity).
    Numeric,
    Json,
    Timestamp,
    TimestampTz,
    Date,
    Bytea,
    /// Text-like: text, varchar, uuid, inet, enum labels, and every type without a better rendering.
    Text,
    /// An array of the element kind; `delim` is the element delimiter (`,` for all but box).
    Array {
        elem: Box<PgKind>,
        delim: u8,
    },
}

/// Kinds of the built-in types, by OID (stable across Postgres versions).
pub fn builtin_kind(oid: u32) -> Option<PgKind> {
    use PgKind::*;
    let k = match oid {
        16 => Bool,
        20 | 21 | 23 | 26 | 28 | 5069 => Int, // int8, int2, int4, oid, xid, xid8
        700 | 701 => Float,
        1700 | 790 => Numeric, // numeric, money (text with currency, kept as string)
        114 | 3802 => Json,
        1114 => Timestamp,
        1184 => TimestampTz,
        1082 => Date,
        17 => Bytea,
        25 | 1043 | 1042 | 18 | 19 | 2950 | 869 | 650 | 829 | 774 | 1083 | 1266 | 1186 | 3614
        | 3615 | 142 | 1560 | 1562 | 3220 | 2249 => Text,
        _ => {
            let elem = match oid {
                1000 => Bool,
                1016 | 1005 | 1007 | 1028 => Int,
                1021 | 1022 => Float,
                1231 | 791 => Numeric,
                199 | 3807 => Json,
                1115 => Timestamp,
                1185 => TimestampTz,
                1182 => Date,
                1001 => Bytea,
                1009 | 1015 | 1014 | 1002 | 1003 | 2951 | 1041 | 651 | 1183 | 1270 | 1187
                | 3643 | 3645 | 143 => Text,
                _ => return None,
            };
            return Some(Array {
                elem: Box::new(elem),
                delim: b',',
            });
        }
    };
    Some(k)
}

/// Cache of type kinds; unknown OIDs are answered as text until resolved.
#[derive(Debug, Default)]
pub struct TypeCatalog {
    resolved: HashMap<u32, PgKind>,
}

impl TypeCatalog {
    pub fn kind(&self, oid: u32) -> PgKind {
        builtin_kind(oid)
            .or_else(|| self.resolved.get(&oid).cloned())
            .unwrap_or(PgKind::Text)
    }

    pub fn is_known(&self, oid: u32) -> bool {
        builtin_kind(oid).is_some() || self.resolved.contains_key(&oid)
    }

    /// Resolve OIDs from `pg_type` rows (which must include the element and base types they point to).
    pub fn learn(&mut self, rows: &[TypeRow]) {
        let by_oid: HashMap<u32, &TypeRow> = rows.iter().map(|r| (r.oid, r)).collect();
        for r in rows {
            let k = self.kind_of(r.oid, &by_oid, 0);
            self.resolved.insert(r.oid, k);
        }
    }

    fn kind_of(&self, oid: u32, rows: &HashMap<u32, &TypeRow>, depth: u32) -> PgKind {
        if let Some(k) = builtin_kind(oid).or_else(|| self.resolved.get(&oid).cloned()) {
            return k;
        }
        let Some(r) = rows.get(&oid) else {
            return PgKind::Text;
        };
        if depth > 8 {
            return PgKind::Text;
        }
        match r.typtype {
            b'd' => self.kind_of(r.typbasetype, rows, depth + 1),
            _ if r.typcategory == b'A' && r.typelem != 0 => PgKind::Array {
                elem: Box::new(self.kind_of(r.typelem, rows, depth + 1)),
                delim: r.typdelim,
            },
            _ => PgKind::Text,
        }
    }
}

/// Convert one text-format value.
pub fn text_to_json(kind: &PgKind, text: &str) -> Value {
    match kind {
        PgKind::Bool => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        PgKind::Int => number_or_string(text),
        PgKind::Float => match text.parse::<f64>() {
            // NaN and ±Infinity have no JSON number: keep Postgres's spelling.
            Ok(f) if f.is_finite() => number_or_string(text),
            _ => Value::String(text.to_owned()),
        },
        PgKind::Numeric => Value::String(text.to_owned()),
        PgKind::Json => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        PgKind::Timestamp => Value::String(iso_timestamp(text, false)),
        PgKind::TimestampTz => Value::String(iso_timestamp(text, true)),
        PgKind::Date => Value::String(text.to_owned()),
        PgKind::Bytea => Value::String(text.to_owned()),
        PgKind::Text => Value::String(text.to_owned()),
        PgKind::Array { elem, delim } => array_value(text, elem, *delim),
    }
}

/// An array as JSON: a plain array for the usual lower bound of 1; with other bounds
/// (`'[0:2]={7,8,9}'`), `{"bounds": "[0:2]", "values": [7, 8, 9]}`, so neither the bounds nor a change of
/// only the bounds is lost (an array column's value is never a JSON object otherwise).
fn array_value(text: &str, elem: &PgKind, delim: u8) -> Value {
    match parse_array(text, delim) {
        Some(a) => {
            let values = array_to_json(&a, elem);
            match array_bounds(text) {
                Some(b) => {
                    let mut m = Map::new();
                    m.insert("bounds".into(), Value::String(b.to_owned()));
                    m.insert("values".into(), values);
                    Value::Object(m)
                }
                None => values,
            }
        }
        None => Value::String(text.to_owned()),
    }
}

/// The explicit-bounds decoration of an array literal (`[0:2]` in `[0:2]={..}`), which Postgres writes only
/// when a lower bound is not 1.
fn array_bounds(text: &str) -> Option<&str> {
    if !text.starts_with('[') {
        return None;
    }
    text.find('=').map(|i| &text[..i])
}

/// Append the JSON text of one text-format value to `out`: the same JSON as `text_to_json` gives, written
/// straight out. json/jsonb text is checked and copied as it is rather than parsed into a tree and printed
/// again (it is most of a diff's cost otherwise); it can therefore keep Postgres's spacing.
pub fn write_text_json(out: &mut Vec<u8>, kind: &PgKind, text: &str) {
    match kind {
        PgKind::Bool => match text {
            "t" | "true" => out.extend_from_slice(b"true"),
            "f" | "false" => out.extend_from_slice(b"false"),
            _ => write_json_str(out, text),
        },
        PgKind::Int if is_json_number(text) => out.extend_from_slice(text.as_bytes()),
        PgKind::Float if is_json_number(text) && text.parse::<f64>().is_ok_and(f64::is_finite) => {
            out.extend_from_slice(text.as_bytes())
        }
        PgKind::Json => match serde_json::from_str::<&serde_json::value::RawValue>(text) {
            Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Err(_) => write_json_str(out, text),
        },
        PgKind::Timestamp => write_json_str(out, &iso_timestamp(text, false)),
        PgKind::TimestampTz => write_json_str(out, &iso_timestamp(text, true)),
        PgKind::Array { elem, delim } => {
            let _ = serde_json::to_writer(&mut *out, &array_value(text, elem, *delim));
        }
        PgKind::Int
        | PgKind::Float
        | PgKind::Numeric
        | PgKind::Date
        | PgKind::Bytea
        | PgKind::Text => write_json_str(out, text),
    }
}

/// Append `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Whether `s` is a JSON number literal: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn number_or_string(text: &str) -> Value {
    // With serde_json's arbitrary_precision the literal is kept digit for digit.
    match serde_json::from_str::<Number>(text) {
        Ok(n) => Value::Number(n),
        Err(_) => Value::String(text.to_owned()),
    }
}

/// `2026-01-02 03:04:05.123456+00` (DateStyle ISO, TimeZone UTC) → `2026-01-02T03:04:05.123456Z`.
/// Infinity and BC values have no ISO-8601 form and keep their text.
fn iso_timestamp(text: &str, with_tz: bool) -> String {
    let b = text.as_bytes();
    // Years past 9999 (Postgres goes to 294276) have more digits: ISO 8601's expanded form, `+294276-…`.
    let y = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let shaped = y >= 4 && text.is_ascii() && b.len() >= y + 15 && b[y] == b'-' && b[y + 6] == b' ';
    if !shaped || text.ends_with(" BC") {
        return text.to_owned();
    }
    let (date_end, time_start) = (y + 6, y + 7);
    let mut out = String::with_capacity(text.len() + 2);
    let (body, offset) = if with_tz {
        // Offsets look like +00, -05:30, +05:45:10; the session runs in UTC so it is +00 in practice.
        match text[time_start + 8..].find(['+', '-']) {
            Some(i) => (&text[..time_start + 8 + i], &text[time_start + 8 + i..]),
            None => (text, ""),
        }
    } else {
        (text, "")
    };
    if y > 4 {
        out.push('+');
    }
    out.push_str(&body[..date_end]);
    out.push('T');
    out.push_str(&body[time_start..]);
    if with_tz {
        match offset {
            "+00" | "" => out.push('Z'),
            o if o.len() == 3 => {
                out.push_str(o);
                out.push_str(":00");
            }
            o => out.push_str(o),
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum ArrayNode {
    Null,
    Item(String),
    List(Vec<ArrayNode>),
}

fn array_to_json(node: &ArrayNode, elem: &PgKind) -> Value {
    match node {
        ArrayNode::Null => Value::Null,
        ArrayNode::Item(s) => text_to_json(elem, s),
        ArrayNode::List(items) => {
            Value::Array(items.iter().map(|n| array_to_json(n, elem)).collect())
        }
    }
}

/// Parse Postgres's array literal (`{1,NULL,"a b"}`, nested `{{1,2},{3,4}}`, `[0:1]={..}` bounds).
fn parse_array(text: &str, delim: u8) -> Option<ArrayNode> {
    let bytes = text.as_bytes();
    let mut i = 0;
    if bytes.first() == Some(&b'[') {
        // Explicit bounds decoration: skip to the '='.
        i = text.find('=')? + 1;
    }
    let (node, end) = parse_list(bytes, i, delim)?;
    if end != bytes.len() {
        return None;
    }
    Some(node)
}

fn parse_list(b: &[u8], mut i: usize, delim: u8) -> Option<(ArrayNode, usize)> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut items = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Some((ArrayNode::List(items), i + 1));
    }
    loop {
        match b.get(i)? {
            b'{' => {
                let (n, next) = parse_list(b, i, delim)?;
                items.push(n);
                i = next;
            }
            b'"' => {
                i += 1;
                let mut s = Vec::new();
                loop {
                    match *b.get(i)? {
                        b'\\' => {
                            s.push(*b.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        c => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                items.push(ArrayNode::Item(String::from_utf8(s).ok()?));
            }
            _ => {
                let start = i;
                while let Some(&c) = b.get(i) {
                    if c == delim || c == b'}' {
                        break;
                    }
                    i += 1;
                }
                let raw = std::str::from_utf8(&b[start..i]).ok()?.trim();
                if raw.eq_ignore_ascii_case("NULL") {
                    items.push(ArrayNode::Null);
                } else {
                    items.push(ArrayNode::Item(raw.to_owned()));
                }
            }
        }
        match *b.get(i)? {
            c if c == delim => i += 1,
            b'}' => return Some((ArrayNode::List(items), i + 1)),
            _ => return None,
        }
    }
}

/// A row as a JSON object, for logging shapes in tests and for creates/deletes.
pub fn object(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Object(pairs.into_iter().collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_json_means_what_the_value_tree_means() {
        let int_arr = PgKind::Array {
            elem: Box::new(PgKind::Int),
            delim: b',',
        };
        let json_arr = PgKind::Array {
            elem: Box::new(PgKind::Json),
            delim: b',',
        };
        let samples: &[(PgKind, &[&str])] = &[
            (PgKind::Bool, &["t", "f", "true", "false", "maybe", ""]),
            (
                PgKind::Int,
                &[
                    "0",
                    "-0",
                    "42",
                    "-9223372036854775808",
                    "18446744073709551616",
                    "007",
                    "1e3",
                    "",
                    "-",
                    "12a",
                ],
            ),
            (
                PgKind::Float,
                &[
                    "1.5",
                    "-0",
                    "1e+100",
                    "1.7976931348623157e+308",
                    "NaN",
                    "Infinity",
                    "-Infinity",
                    ".5",
                    "5.",
                    "1e",
                    "0.1",
                ],
            ),
            (
                PgKind::Numeric,
                &["1.50", "NaN", "123456789012345678901234567890.1"],
            ),
            (
                PgKind::Json,
                &[
                    r#"{"a": 1, "b": [1, 2.50, "x"], "c": {"d": null}}"#,
                    r#"  [1 , 2]  "#,
                    "12345678901234567890123456789",
                    r#""\u00e9\n""#,
                    "not json",
                    r#"{"a": 1"#,
                    "",
                ],
            ),
            (
                PgKind::TimestampTz,
                &[
                    "2026-01-02 03:04:05.123456+00",
                    "infinity",
                    "2026-01-02 03:04:05-05:30",
                    "0044-03-15 12:00:00+00 BC",
                ],
            ),
            (PgKind::Timestamp, &["2026-01-02 03:04:05", "-infinity"]),
            (
                PgKind::Text,
                &[
                    "plain",
                    "quote \" and \\ back",
                    "tab\tnl\n\u{1}",
                    "é ü 中",
                    "",
                ],
            ),
            (
                int_arr.clone(),
                &[
                    "{1,2,NULL}",
                    "{{1,2},{3,4}}",
                    "[0:1]={7,8}",
                    "{}",
                    "{1,",
                    "{a}",
                ],
            ),
            (json_arr, &[r#"{"{\"a\": 1}",NULL,"[1, 2]"}"#]),
        ];
        for (kind, texts) in samples {
            for text in *texts {
                let mut out = Vec::new();
                write_text_json(&mut out, kind, text);
                let written: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                    panic!(
                        "{kind:?} {text:?} wrote invalid JSON {:?}: {e}",
                        String::from_utf8_lossy(&out)
                    )
                });
                assert_eq!(written, text_to_json(kind, text), "{kind:?} {text:?}");
            }
        }
    }

    #[test]
    fn json_number_grammar() {
        for ok in [
            "0", "-0", "1", "-12", "1.0", "0.5", "1e5", "1E+5", "-1.5e-7",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "01", ".5", "5.", "1e", "1e+", "+1", "1 ", "0x1", "NaN", "1.5.1",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(
            text_to_json(&PgKind::Int, "9223372036854775807").to_string(),
            "9223372036854775807"
        );
        assert_eq!(text_to_json(&PgKind::Float, "1.5"), json!(1.5));
        assert_eq!(text_to_json(&PgKind::Float, "NaN"), json!("NaN"));
        assert_eq!(
            text_to_json(&PgKind::Float, "-Infinity"),
            json!("-Infinity")
        );
        assert_eq!(
            text_to_json(&PgKind::Numeric, "12345678901234567890.000000001"),
            json!("12345678901234567890.000000001")
        );
        assert_eq!(text_to_json(&PgKind::Bool, "t"), json!(true));
        assert_eq!(
            text_to_json(&PgKind::Json, r#"{"a":[1,2]}"#),
            json!({"a":[1,2]})
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            iso_timestamp("2026-01-02 03:04:05.123456+00", true),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            iso_timestamp("2026-01-02 03:04:05+05:30", true),
            "2026-01-02T03:04:05+05:30"
        );
        assert_eq!(
            iso_timestamp("2026-01-02 03:04:05-07", true),
            "2026-01-02T03:04:05-07:00"
        );
        assert_eq!(
            iso_timestamp("2026-01-02 03:04:05", false),
            "2026-01-02T03:04:05"
        );
        assert_eq!(iso_timestamp("infinity", true), "infinity");
        assert_eq!(
            iso_timestamp("0044-03-15 12:00:00+00 BC", true),
            "0044-03-15 12:00:00+00 BC"
        );
        // Past year 9999: ISO 8601's expanded year, signed.
        assert_eq!(
            iso_timestamp("294276-12-31 23:59:59.999999+00", true),
            "+294276-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            iso_timestamp("10000-01-01 00:00:00", false),
            "+10000-01-01T00:00:00"
        );
        // Not a timestamp's shape: as it is, never cut.
        assert_eq!(iso_timestamp("12345-01", false), "12345-01");
    }

    #[test]
    fn arrays() {
        let text = PgKind::Array {
            elem: Box::new(PgKind::Text),
            delim: b',',
        };
        assert_eq!(
            text_to_json(&text, r#"{a,"b c",NULL,"NULL","x\"y",""}"#),
            json!(["a", "b c", null, "NULL", "x\"y", ""])
        );
        let ints = PgKind::Array {
            elem: Box::new(PgKind::Int),
            delim: b',',
        };
        assert_eq!(
            text_to_json(&ints, "{{1,2},{3,NULL}}"),
            json!([[1, 2], [3, null]])
        );
        // Bounds other than the default are kept: the same values with other bounds are another value.
        assert_eq!(
            text_to_json(&ints, "[0:1]={7,8}"),
            json!({"bounds": "[0:1]", "values": [7, 8]})
        );
        assert_eq!(
            text_to_json(&ints, "[0:1][2:3]={{1,2},{3,4}}"),
            json!({"bounds": "[0:1][2:3]", "values": [[1, 2], [3, 4]]})
        );
        let mut out = Vec::new();
        write_text_json(&mut out, &ints, "[0:1]={7,8}");
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            text_to_json(&ints, "[0:1]={7,8}")
        );
        assert_eq!(text_to_json(&ints, "{}"), json!([]));
        // Malformed input keeps its text rather than failing.
        assert_eq!(text_to_json(&ints, "{1,2"), json!("{1,2"));
        let boxes = PgKind::Array {
            elem: Box::new(PgKind::Text),
            delim: b';',
        };
        assert_eq!(
            text_to_json(&boxes, "{(1,1),(0,0);(2,2),(1,1)}"),
            json!(["(1,1),(0,0)", "(2,2),(1,1)"])
        );
    }

    #[test]
    fn domains_and_enum_arrays_resolve() {
        let mut cat = TypeCatalog::default();
        cat.learn(&[
            TypeRow {
                oid: 90001,
                typtype: b'e',
                typcategory: b'E',
                typelem: 0,
                typbasetype: 0,
                typdelim: b',',
            },
            TypeRow {
                oid: 90002,
                typtype: b'b',
                typcategory: b'A',
                typelem: 90001,
                typbasetype: 0,
                typdelim: b',',
            },
            TypeRow {
                oid: 90003,
                typtype: b'd',
                typcategory: b'N',
                typelem: 0,
                typbasetype: 23,
                typdelim: b',',
            },
        ]);
        assert_eq!(cat.kind(90001), PgKind::Text);
        assert_eq!(
            cat.kind(90002),
            PgKind::Array {
                elem: Box::new(PgKind::Text),
                delim: b','
            }
        );
        assert_eq!(cat.kind(90003), PgKind::Int);
        assert_eq!(cat.kind(12345678), PgKind::Text);
    }
}

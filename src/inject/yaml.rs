//! YAML out, for `connd inject`: block style as `kubectl` prints it, and read back the
//! same by YAML 1.2 and YAML 1.1 readers alike. `serde_yaml` leaves `yes`, `on`, `off`
//! or `1:20` unquoted (plain strings in YAML 1.2), which `kubectl` (go-yaml, YAML 1.1)
//! and PyYAML read as booleans and numbers: an env value `"yes"` would come back as
//! `true` and the API server refuse the object. So a string is written plain only when
//! it is plainly a string to every reader (a letter or `/` first, then letters, digits
//! and `-_./:@+=`, not a YAML 1.1 boolean or null); otherwise double-quoted with JSON's
//! escapes (a subset of YAML's); a multi-line string as a literal block where that is
//! exact.
//!
//! Boundary: one `serde_yaml::Value` to text; streams are `manifest`'s.

use serde_yaml::{Mapping, Value};
use std::fmt::Write;

/// The document `value` as block-style YAML, ending in a newline.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0, false),
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0),
        other => {
            scalar(&mut out, other);
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat(' ').take(indent));
}

/// Entries at `indent`; with `inline_first` the first one follows a `- ` already written.
fn mapping(out: &mut String, m: &Mapping, indent: usize, inline_first: bool) {
    for (i, (key, value)) in m.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        match key {
            Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_) => flow(out, key),
            _ => scalar(out, key),
        }
        out.push(':');
        match value {
            Value::Mapping(m) if !m.is_empty() => {
                out.push('\n');
                mapping(out, m, indent + 2, false);
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push('\n');
                sequence(out, s, indent);
            }
            Value::String(s) if is_block(s) => block(out, s, indent + 2),
            other => {
                out.push(' ');
                scalar(out, other);
                out.push('\n');
            }
        }
    }
}

fn sequence(out: &mut String, s: &[Value], indent: usize) {
    for item in s {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                out.push(' ');
                mapping(out, m, indent + 2, true);
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push('\n');
                sequence(out, s, indent + 2);
            }
            Value::String(s) if is_block(s) => block(out, s, indent + 2),
            other => {
                out.push(' ');
                scalar(out, other);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or an empty collection) on the current line.
fn scalar(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) if is_plain(s) => out.push_str(s),
        Value::String(s) => quoted(out, s),
        Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_) => flow(out, v),
    }
}

/// A collection or tagged value on one line, in flow style.
fn flow(out: &mut String, v: &Value) {
    match v {
        Value::Mapping(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                out.push_str(if i == 0 { "" } else { ", " });
                flow(out, k);
                out.push_str(": ");
                flow(out, v);
            }
            out.push('}');
        }
        Value::Sequence(s) => {
            out.push('[');
            for (i, v) in s.iter().enumerate() {
                out.push_str(if i == 0 { "" } else { ", " });
                flow(out, v);
            }
            out.push(']');
        }
        Value::Tagged(t) => {
            let _ = write!(out, "{} ", t.tag);
            flow(out, &t.value);
        }
        Value::String(s) => quoted(out, s),
        other => scalar(out, other),
    }
}

/// `s` double-quoted: JSON's escapes, and YAML's for what JSON leaves raw but a YAML reader
/// refuses or folds: DEL and the C1 controls (`\x7F`, `\x85`...), and the line and paragraph
/// separators U+2028 and U+2029 (`\L`, `\P`), which YAML 1.1 reads as line breaks.
fn quoted(out: &mut String, s: &str) {
    for c in serde_json::to_string(s).unwrap_or_default().chars() {
        match c {
            '\u{7f}'..='\u{9f}' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Words YAML 1.1 reads as booleans or null (`y` and `n` too, for go-yaml).
const WORDS: [&str; 10] = ["y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"];

fn is_plain(s: &str) -> bool {
    let first_ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/');
    first_ok
        && !s.ends_with(':')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@+=".contains(&b))
        && !WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// Whether `s` reads back exactly from a literal block: several lines, printable, no
/// line ending in a blank, no leading blank on the first line.
fn is_block(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars()
            .all(|c| c == '\n' || !(c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}')))
        && s.split('\n').all(|line| !line.ends_with(' '))
        && !s.contains('\u{feff}')
}

/// `|`, `|-` or `|+` by the trailing line breaks, then the lines at `indent`.
fn block(out: &mut String, s: &str, indent: usize) {
    let body = s.trim_end_matches('\n');
    let chomp = match s.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let _ = writeln!(out, " |{chomp}");
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..(s.len() - body.len()) {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(v: &Value) {
        let text = to_string(v);
        let back: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert_eq!(&back, v, "\n{text}");
    }

    #[test]
    fn yaml_1_1_words_and_numbers_in_strings_are_quoted() {
        let v: Value = serde_yaml::from_str(
            "a: 'yes'\nb: 'on'\nc: 'y'\nd: '1:20'\ne: '0660'\nf: '10m'\ng: plain/path:8080\nh: 'NULL'\ni: ''\n",
        )
        .unwrap();
        let text = to_string(&v);
        assert_eq!(
            text,
            "a: \"yes\"\nb: \"on\"\nc: \"y\"\nd: \"1:20\"\ne: \"0660\"\nf: \"10m\"\ng: plain/path:8080\nh: \"NULL\"\ni: \"\"\n"
        );
        round_trip(&v);
    }

    #[test]
    fn blocks_keep_their_line_breaks() {
        for s in ["a\nb", "a\nb\n", "a\n\nb\n\n\n", "key: yes\n# not a comment\n---\n"] {
            let v = Value::Mapping([(Value::from("k"), Value::from(s))].into_iter().collect());
            assert!(to_string(&v).contains("k: |"), "{}", to_string(&v));
            round_trip(&v);
            round_trip(&Value::Sequence(vec![Value::from(s), v]));
        }
    }

    #[test]
    fn characters_a_yaml_reader_refuses_or_folds_are_escaped() {
        for s in ["x\u{7f}y", "x\u{85}y\u{2028}z\u{2029}", "a\nb\u{2028}c\n", "\u{9f}\u{fffe}"] {
            let v = Value::Mapping([(Value::from("k"), Value::from(s))].into_iter().collect());
            let text = to_string(&v);
            let raw = |c: char| matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}');
            assert!(!text.chars().any(raw), "written raw: {text:?}");
            round_trip(&v);
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ -~\n\t\u{e9}]{0,12}".prop_map(Value::from),
            prop::sample::select(vec!["yes", "on", "-", "- a", "a: b", "#x", "[1]", "{}", " x", "x ", "1e3", ".5"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
                prop::collection::vec(("[a-z:/ -]{0,6}", inner), 0..5)
                    .prop_map(|kv| Value::Mapping(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn anything_reads_back_the_same(v in value()) {
            round_trip(&v);
        }
    }
}

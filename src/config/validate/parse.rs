//! One YAML document to its raw serde model: refused when nested too deeply to parse
//! in bounded time, its `kind` read without a full parse, and a parser error turned into a
//! diagnostic a user reads (the nearest known name, never the offending value).

use crate::config::diag::{Diagnostics, Origin};
use crate::config::files::Document;
use crate::config::{events, scalar, suggest};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Flow collections (`[`, `{`) open at once past this are refused before parsing:
/// libyaml's work grows with the square of the nesting (15,000 levels took seconds), and
/// the deserializer refuses anything past 128 levels anyway.
const MAX_FLOW_NESTING: usize = 1000;

/// The line where `doc` opens more than [`MAX_FLOW_NESTING`] flow collections at once,
/// if it does: a linear scan that over-counts brackets inside scalars, which is harmless
/// at this limit.
fn too_deep(doc: &Document<'_>) -> Option<usize> {
    // Fewer openings in all than the limit cannot nest past it: one count, which the
    // compiler vectorises, settles nearly every document.
    if doc.text.bytes().filter(|b| matches!(b, b'[' | b'{')).count() <= MAX_FLOW_NESTING {
        return None;
    }
    let (mut depth, mut line) = (0usize, doc.first_line);
    for b in doc.text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_NESTING {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    None
}

/// Refuses a document nested too deeply to parse in bounded time.
pub(super) fn refuse_deep(path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> bool {
    let Some(line) = too_deep(doc) else { return false };
    diags.error(
        Origin::at(path, line),
        format!("YAML nested more than {MAX_FLOW_NESTING} levels deep"),
        "write the document with the few levels its format has",
    );
    true
}

/// Deserializes one document, turning a parser error into a diagnostic at its line.
pub(super) fn parse<T: DeserializeOwned>(
    path: &Path,
    doc: &Document<'_>,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<T> {
    // Without anchors (no `&`), the events' fast path; it gives way to serde_yaml_ng,
    // which says what is wrong, wherever it might read otherwise.
    if !doc.text.contains('&') {
        if let Some(value) = events::read(doc.text).and_then(|e| e.deserialize()) {
            return Some(value);
        }
    }
    parse_slow(path, doc, what, diags)
}

/// [`parse`] by serde_yaml_ng alone: every document the fast path gives way on, and
/// every error's words and line.
pub(super) fn parse_slow<T: DeserializeOwned>(
    path: &Path,
    doc: &Document<'_>,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<T> {
    // Keys that connd ignores are skipped unexpanded, so an alias bomb under one would
    // pass unseen. A document that defines anchors is expanded once in full, under the
    // parser's repetition limit, so that every bomb is refused the same way.
    let expanded =
        if doc.text.contains('&') { serde_yaml::from_str::<serde_yaml::Value>(doc.text).err() } else { None };
    let parsed = match expanded {
        Some(e) => Err(e),
        None => serde_yaml::from_str::<T>(doc.text),
    };
    match parsed {
        Ok(value) => Some(value),
        Err(e) => {
            let line = e.location().map(|l| doc.first_line + l.line() - 1).unwrap_or(doc.first_line);
            let (message, fix) = explain(&e, doc, line, what);
            diags.error(Origin::at(path, line), message, fix);
            None
        }
    }
}

/// A parser error as a user reads it: what is wrong and what to do, with the nearest
/// known name where a name was misspelled.
fn explain(e: &serde_yaml::Error, doc: &Document<'_>, line: usize, what: &str) -> (String, String) {
    let raw = e.to_string();
    let message = parser_message(e);
    let line_text = doc.text.lines().nth(line.saturating_sub(doc.first_line)).unwrap_or("");
    let indent = &line_text[..line_text.len() - line_text.trim_start().len()];
    if indent.contains('\t') || (raw.contains("cannot start any token") && line_text.trim_start().starts_with('\t')) {
        return (
            "a tab in the indentation: YAML indents with spaces only".to_owned(),
            "replace the tab with spaces".to_owned(),
        );
    }
    if message.contains("repetition limit") {
        return (
            "YAML aliases expand past the parser's repetition limit (an alias bomb)".to_owned(),
            "write the values out instead of nesting aliases (`*name`) in this document".to_owned(),
        );
    }
    if message.contains("recursion limit") {
        return (message, "write the values out instead of nesting aliases (`*name`) in this document".to_owned());
    }
    if message.contains(scalar::NULL_MESSAGE) {
        return (message, scalar::NULL_FIX.to_owned());
    }
    let unknown = ["unknown field `", "unknown variant `"].iter().find_map(|m| {
        let rest = &raw[raw.find(m)? + m.len()..];
        Some((&rest[..rest.find('`')?], rest))
    });
    let Some((word, rest)) = unknown else {
        let structural = ["mapping values are not allowed", "did not find expected key", "did not find expected '-'"];
        if structural.iter().any(|m| message.contains(m)) {
            if let Some(said) = misaligned_item(doc, line) {
                return said;
            }
            return (
                message,
                format!("check the indentation of this line and the one before; correct the YAML of this {what}"),
            );
        }
        return (message, format!("correct the YAML of this {what}"));
    };
    // The names after "expected": `a`, `b` or `c`.
    let expected = rest.split_once("expected").map_or("", |(_, e)| e);
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    // Under `parameters`, `Password: {s3cret}` is a value the YAML reads as a one-key
    // flow map: its "field" may be a secret, so it is neither echoed nor spelled against
    // the source keys.
    let written = line_text.split_once(':').map_or("", |(_, v)| v.split(" #").next().unwrap_or("").trim());
    let bare_flow_map =
        written.strip_prefix('{').and_then(|v| v.strip_suffix('}')).is_some_and(|v| !v.contains([':', ',']));
    if raw.starts_with("parameters.") && message.contains("unknown field") && bare_flow_map {
        let param = raw["parameters.".len()..].split([':', '.']).next().unwrap_or("");
        return (
            format!("parameters.{param}: a value written as a YAML flow map (`{{...}}`), which YAML reads as a source with an unknown key"),
            format!("quote the value: `{param}: \"{{...}}\"`"),
        );
    }
    if let Some(meant) = suggest::nearest(word, candidates.iter().copied()) {
        return (format!("{message} (did you mean `{meant}`?)"), format!("correct the spelling: `{meant}`"));
    }
    // Parameter keys are PascalCase (`HostName`), descriptor fields camelCase.
    if message.starts_with("unknown field")
        && what == "Connection"
        && word.starts_with(|c: char| c.is_ascii_uppercase())
    {
        return (
            message,
            "it is not a descriptor field; if it is a parameter, it may belong under `parameters` \
             (indent it like the parameters there); else remove it"
                .to_owned(),
        );
    }
    (message, format!("remove the key, or correct its spelling; see the {what} format in the README"))
}

/// A list item (`- ...`) at `line`, or on the line before it, that starts at another
/// column than the item before it in the same list: what the parser's "did not find
/// expected key" or "expected '-' indicator" means there, as a message and a fix.
fn misaligned_item(doc: &Document<'_>, line: usize) -> Option<(String, String)> {
    let lines: Vec<&str> = doc.text.lines().collect();
    let at = line.checked_sub(doc.first_line)?;
    let column = |l: &str| l.len() - l.trim_start().len();
    let is_item = |l: &str| l.trim_start().starts_with("- ") || l.trim() == "-";
    // The parser may stop on the line after the item it could not place.
    let item = [at, at.checked_sub(1)?].into_iter().find(|&i| lines.get(i).is_some_and(|l| is_item(l)))?;
    let col = column(lines[item]);
    // The item before it in the same list: the nearest earlier item, skipping lines
    // indented deeper than both (the earlier item's own content).
    let before =
        (0..item).rev().find(|&i| is_item(lines[i]) || (!lines[i].trim().is_empty() && column(lines[i]) < col))?;
    if !is_item(lines[before]) || column(lines[before]) == col {
        return None;
    }
    let (n, m, want) = (doc.first_line + item, doc.first_line + before, column(lines[before]));
    Some((
        format!(
            "the list item on line {n} starts at column {}, but the item before it (line {m}) at column {}: \
             the items of one list must line up",
            col + 1,
            want + 1
        ),
        format!("indent line {n} (and the lines under it) by {want} spaces, as line {m}"),
    ))
}

/// The parser's message without its own " at line L column C" suffix (the origin says
/// it), and without the offending value: a secret pasted under the wrong key must not be
/// echoed into logs. `invalid type: string "s3cret", expected a boolean` becomes
/// `invalid type: a string, expected a boolean`.
fn parser_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    redact_values(text)
}

fn redact_values(text: &str) -> String {
    // serde's `Unexpected` renderings, which quote the offending value, and what to say
    // instead. Under `parameters` a flow-map typo (`Password: {s3cret}`) turns a value
    // into a "field name", so field names are redacted there too.
    const QUOTED: [(&str, char, &str); 6] = [
        ("string \"", '"', "a string"),
        ("integer `", '`', "an integer"),
        ("floating point `", '`', "a floating point number"),
        ("boolean `", '`', "a boolean"),
        ("character '", '\'', "a character"),
        ("variant `", '`', "variant"),
    ];
    let field = ("field `", '`', "field");
    let markers: Vec<(&str, char, &str)> =
        QUOTED.into_iter().chain(text.starts_with("parameters.").then_some(field)).collect();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = markers.iter().filter_map(|m| rest.find(m.0).map(|i| (i, m))).min_by_key(|(i, _)| *i);
        let Some((i, &(open, close, replacement))) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        out.push_str(replacement);
        let after = &rest[i + open.len()..];
        // Values may contain the closing quote escaped; the parser writes `\"`.
        let mut end = None;
        let mut escaped = false;
        for (j, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == close && !escaped => {
                    end = Some(j);
                    break;
                }
                _ => escaped = false,
            }
        }
        match end {
            Some(j) => rest = &after[j + close.len_utf8()..],
            None => return out,
        }
    }
}

/// The `kind` of a document, read from its top-level `kind:` line without a full parse.
pub(super) fn kind_of(doc: &Document<'_>) -> Option<String> {
    let from_line = doc.text.lines().find_map(|l| {
        let v = l.strip_prefix("kind:")?;
        Some(v.split(" #").next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned())
    });
    from_line.or_else(|| {
        // Flow style (`{kind: Connection, ...}`): ask the parser, for `kind` alone, so
        // that nothing else (a number too large for a YAML integer) stops it.
        #[derive(serde::Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        serde_yaml::from_str::<Kind>(doc.text).ok()?.kind
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_do_not_echo_values() {
        assert_eq!(
            redact_values(r#"parameters.B.remote: invalid type: string "hun\"ter2", expected a boolean"#),
            "parameters.B.remote: invalid type: a string, expected a boolean"
        );
        assert_eq!(
            redact_values("visibility: unknown variant `hunter4`, expected `project` or `component`"),
            "visibility: unknown variant, expected `project` or `component`"
        );
        assert_eq!(redact_values("unknown field `a`, expected `id`"), "unknown field `a`, expected `id`");
        assert_eq!(
            redact_values("parameters.Pw: unknown field `hunter2`, expected one of `value`, `file`"),
            "parameters.Pw: unknown field, expected one of `value`, `file`"
        );
        assert_eq!(
            redact_values("parameters.B.remote: invalid type: integer `98765432`, expected a boolean"),
            "parameters.B.remote: invalid type: an integer, expected a boolean"
        );
        assert_eq!(
            redact_values("x: invalid type: floating point `1.5`, expected y"),
            "x: invalid type: a floating point number, expected y"
        );
    }
}

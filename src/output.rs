//! What `check` and `env` print. Every format is safe for any value: shell output can be
//! `eval`ed, dotenv output is quoted for the common parsers, JSON is JSON.

use crate::config::files::read_value_file;
use crate::config::model::{secret_by_default, Source, ACCESS_TOKEN};
use crate::dotenv::dotenv_quote;
use crate::resolve::{Binding, Plan, Target};
use crate::secret::{Secret, REDACTED};
use serde::ser::SerializeSeq;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

/// How `env` prints the variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dotenv,
    Json,
    Shell,
}

/// `'...'` with every `'` written as `'\''`: POSIX shells take everything else literally.
pub fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

pub fn render_env(env: &BTreeMap<String, Secret>, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            let map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
            out = serde_json::to_string_pretty(&map).expect("a map of strings serializes");
            out.push('\n');
        }
        Format::Dotenv => {
            for (k, v) in env {
                let _ = writeln!(out, "{k}={}", dotenv_quote(v.expose()));
            }
        }
        Format::Shell => {
            for (k, v) in env {
                let _ = writeln!(out, "export {k}={}", shell_quote(v.expose()));
            }
        }
    }
    out
}

/// How `check` prints the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

/// The plan as `check` prints it: connections, then variables with their source and, for
/// values that are not secret and are known locally, the value. Written row by row:
/// 10,000 connections make 50,000 rows, which are never all held as strings at once.
pub fn write_plan(out: &mut impl Write, plan: &Plan) -> io::Result<()> {
    let id = &plan.identity;
    writeln!(out, "component {} in project {} ({})", id.component, id.project, plan.dir.display())?;
    out.write_all(b"\nconnections:\n")?;
    let (mut visibility, mut security) = (Lower::default(), Lower::default());
    for c in &plan.connections {
        let conn = &c.connection;
        let (visibility, security) = (visibility.of(conn.visibility), security.of(conn.security));
        writeln!(out, "  {:<24} {:<10} {:<9} {:<7} {}", c.name, c.kind.as_str(), visibility, security, conn.id)?;
        // docs/oauth.md: the grant and the method, never a key.
        if let Some(o) = &conn.oauth {
            writeln!(out, "    oauth: grant {}, clientAuth {}", o.grant.name(), o.client_auth.name())?;
        }
        // docs/proxy.md: the connection's own listener in `serve` and `run`.
        if let Some(p) = &conn.proxy_port {
            writeln!(out, "    proxy port: 127.0.0.1:{}", p.port)?;
        }
    }
    out.write_all(b"\nvariables:\n")?;
    // Column widths first, from what each row says of its source; values are read after.
    let places: Vec<_> = plan.vars.iter().map(|b| place(plan, b)).collect();
    let (mut w0, mut w1, mut w2) = (0, 0, 0);
    for (b, (from, source, _)) in plan.vars.iter().zip(&places) {
        w0 = w0.max(b.var.chars().count());
        w1 = w1.max(from.chars());
        w2 = w2.max(source.chars());
    }
    let mut files = ValueFiles::default();
    for (b, &(from, source, what)) in plan.vars.iter().zip(&places) {
        out.write_all(b"  ")?;
        padded(out, &b.var, w0)?;
        out.write_all(b"  ")?;
        from.write(out)?;
        pad(out, from.chars(), w1)?;
        out.write_all(b"  ")?;
        source.write(out)?;
        pad(out, source.chars(), w2)?;
        out.write_all(b"  ")?;
        match files.shown(what) {
            Shown::Value(v) => write_escaped(out, v)?,
            Shown::Redacted => out.write_all(REDACTED.as_bytes())?,
            Shown::Remote => out.write_all(b"<remote>")?,
        }
        out.write_all(b"\n")?;
    }
    for (var, what) in &plan.skipped {
        writeln!(out, "  {var:<w0$}  (left out: {what} is not served by connd)")?;
    }
    let (n, v, w) = (plan.connections.len(), plan.vars.len(), plan.warnings.len());
    // A warning is no pass: the summary says how many there are (stderr says which).
    let ok = if w == 0 { "ok".to_owned() } else { format!("ok, with {w} {}", plural(w, "warning")) };
    writeln!(out, "\n{ok}: {n} {}, {v} {}", plural(n, "connection"), plural(v, "variable"))
}

/// `value` as the table shows it: a line break or an escape sequence in a value must not
/// break the table or the terminal.
fn write_escaped(out: &mut impl Write, value: &str) -> io::Result<()> {
    // ASCII text, most values, is checked byte by byte: its control characters are
    // those below a space and DEL.
    let control = if value.is_ascii() {
        value.bytes().any(|b| b < b' ' || b == 0x7f)
    } else {
        value.chars().any(char::is_control)
    };
    if control {
        write!(out, "{}", value.escape_debug())
    } else {
        out.write_all(value.as_bytes())
    }
}

/// `text`, then spaces up to `width` characters (as `{:<width$}` pads).
fn padded(out: &mut impl Write, text: &str, width: usize) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    pad(out, text.chars().count(), width)
}

/// The spaces that take `chars` characters to `width`.
fn pad(out: &mut impl Write, chars: usize, width: usize) -> io::Result<()> {
    const SPACES: &[u8; 64] = &[b' '; 64];
    let mut left = width.saturating_sub(chars);
    while left > 0 {
        let n = left.min(SPACES.len());
        out.write_all(&SPACES[..n])?;
        left -= n;
    }
    Ok(())
}

/// A value's `Debug` name in lower case (`OAuth2` is `oauth2`), made again only when the
/// value differs from the last one asked for: connections mostly share theirs.
struct Lower<T> {
    last: Option<(T, String)>,
}

impl<T> Default for Lower<T> {
    fn default() -> Self {
        Lower { last: None }
    }
}

impl<T: std::fmt::Debug + PartialEq + Copy> Lower<T> {
    fn of(&mut self, value: T) -> &str {
        if !matches!(&self.last, Some((last, _)) if *last == value) {
            let mut name = format!("{value:?}");
            // Variant names are ASCII.
            name.make_ascii_lowercase();
            self.last = Some((value, name));
        }
        self.last.as_ref().map_or("", |(_, name)| name)
    }
}

/// The plan as `check --format json` prints it, for CI: the same content as the text,
/// values redacted the same way. Shape:
/// `{component, project, dir, connections: [{name, kind, visibility, security, id, oauth: {grant, clientAuth} | null,
/// proxyPort: N | null}],
/// variables: [{name, from, source, value, redacted}], skipped: [{name, source}],
/// warnings: [{file, line, message, fix}]}`, and `files` when the plan has files (given
/// here as JSON by their module); `value` is null when it is not shown (`redacted: true`,
/// or a `remote` source, which `check` does not contact). Keys are written in byte order,
/// as serde_json's maps keep them. Serialized as it is written, row by row.
pub fn write_plan_json(out: &mut impl Write, plan: &Plan, files: Option<serde_json::Value>) -> io::Result<()> {
    let doc = JsonPlan {
        component: &plan.identity.component,
        connections: JsonConnections(plan),
        dir: plan.dir.to_string_lossy(),
        files,
        project: &plan.identity.project,
        skipped: JsonSkipped(plan),
        variables: JsonVariables(plan),
        warnings: JsonWarnings(plan),
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

// The JSON plan's parts. Fields are declared in byte order of their names: the order
// serde_json's `Map` gives its keys, which this output has always had.

#[derive(Serialize)]
struct JsonPlan<'a> {
    component: &'a str,
    connections: JsonConnections<'a>,
    /// A path that is not UTF-8 is written with U+FFFD for its other bytes, as the text
    /// output shows it: JSON strings are Unicode.
    dir: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<serde_json::Value>,
    project: &'a str,
    skipped: JsonSkipped<'a>,
    variables: JsonVariables<'a>,
    warnings: JsonWarnings<'a>,
}

#[derive(Serialize)]
struct JsonConnection<'a> {
    id: &'a str,
    kind: &'a str,
    name: &'a str,
    oauth: Option<JsonOAuth>,
    #[serde(rename = "proxyPort")]
    proxy_port: Option<u16>,
    security: &'a str,
    visibility: &'a str,
}

#[derive(Serialize)]
struct JsonOAuth {
    #[serde(rename = "clientAuth")]
    client_auth: &'static str,
    grant: &'static str,
}

#[derive(Serialize)]
struct JsonVariable<'a> {
    from: JsonStr<FromText<'a>>,
    name: &'a str,
    redacted: bool,
    source: JsonStr<SourceText<'a>>,
    value: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonSkip<'a> {
    name: &'a str,
    source: &'a str,
}

#[derive(Serialize)]
struct JsonWarning<'a> {
    /// As `JsonPlan::dir`.
    file: Cow<'a, str>,
    fix: Option<&'a str>,
    line: Option<usize>,
    message: &'a str,
}

struct JsonConnections<'a>(&'a Plan);

impl Serialize for JsonConnections<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.connections.len()))?;
        let (mut visibility, mut security) = (Lower::default(), Lower::default());
        for c in &self.0.connections {
            let conn = &c.connection;
            let (visibility, security) = (visibility.of(conn.visibility), security.of(conn.security));
            seq.serialize_element(&JsonConnection {
                id: &conn.id,
                kind: c.kind.as_str(),
                name: &c.name,
                oauth: conn
                    .oauth
                    .as_ref()
                    .map(|o| JsonOAuth { client_auth: o.client_auth.name(), grant: o.grant.name() }),
                proxy_port: conn.proxy_port.as_ref().map(|p| p.port),
                security,
                visibility,
            })?;
        }
        seq.end()
    }
}

/// The variables, each made as it is written.
struct JsonVariables<'a>(&'a Plan);

impl Serialize for JsonVariables<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let plan = self.0;
        let mut seq = s.serialize_seq(Some(plan.vars.len()))?;
        let mut files = ValueFiles::default();
        for b in &plan.vars {
            let (from, source, what) = place(plan, b);
            let (value, redacted) = match files.shown(what) {
                Shown::Value(v) => (Some(v), false),
                Shown::Redacted => (None, true),
                Shown::Remote => (None, false),
            };
            seq.serialize_element(&JsonVariable {
                from: JsonStr(from),
                name: &b.var,
                redacted,
                source: JsonStr(source),
                value,
            })?;
        }
        seq.end()
    }
}

struct JsonSkipped<'a>(&'a Plan);

impl Serialize for JsonSkipped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.skipped.iter().map(|(var, what)| JsonSkip { name: var, source: what }))
    }
}

struct JsonWarnings<'a>(&'a Plan);

impl Serialize for JsonWarnings<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.warnings.iter().map(|w| JsonWarning {
            file: w.origin.file.to_string_lossy(),
            fix: w.fix.as_deref(),
            line: w.origin.line,
            message: &w.message,
        }))
    }
}

/// A JSON string of what `T` displays, made without a `String` of its own.
struct JsonStr<T>(T);

impl<T: std::fmt::Display> Serialize for JsonStr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Where a variable comes from, as the `from` column shows it.
#[derive(Clone, Copy)]
enum FromText<'a> {
    Literal,
    /// `<connection>.<key>`.
    Param(&'a str, &'a str),
}

impl FromText<'_> {
    fn chars(self) -> usize {
        match self {
            FromText::Literal => "(literal)".len(),
            FromText::Param(name, key) => name.chars().count() + 1 + key.chars().count(),
        }
    }

    fn write(self, out: &mut impl Write) -> io::Result<()> {
        match self {
            FromText::Literal => out.write_all(b"(literal)"),
            FromText::Param(name, key) => {
                out.write_all(name.as_bytes())?;
                out.write_all(b".")?;
                out.write_all(key.as_bytes())
            }
        }
    }
}

impl std::fmt::Display for FromText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FromText::Literal => f.write_str("(literal)"),
            FromText::Param(name, key) => write!(f, "{name}.{key}"),
        }
    }
}

/// The `source` column: a word, or `Source::describe`'s `file:<path>`.
#[derive(Clone, Copy)]
enum SourceText<'a> {
    Word(&'static str),
    File(&'a Path),
}

impl<'a> SourceText<'a> {
    fn of(source: &'a Source) -> Self {
        match source {
            Source::Value(_) => SourceText::Word("value"),
            Source::File(path) => SourceText::File(path),
            Source::ControlPlane => SourceText::Word("remote"),
        }
    }

    fn chars(self) -> usize {
        match self {
            SourceText::Word(w) => w.len(),
            SourceText::File(path) => match path.to_str() {
                Some(p) => "file:".len() + p.chars().count(),
                None => "file:".len() + path.display().to_string().chars().count(),
            },
        }
    }

    fn write(self, out: &mut impl Write) -> io::Result<()> {
        match self {
            SourceText::Word(w) => out.write_all(w.as_bytes()),
            SourceText::File(path) => match path.to_str() {
                // A UTF-8 path displays as itself: written without the formatter.
                Some(text) => {
                    out.write_all(b"file:")?;
                    out.write_all(text.as_bytes())
                }
                None => write!(out, "file:{}", path.display()),
            },
        }
    }
}

impl std::fmt::Display for SourceText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceText::Word(w) => f.write_str(w),
            SourceText::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// What `check` shows of a value.
enum Shown<'a> {
    Value(&'a str),
    Redacted,
    /// From the control plane, which `check` does not contact.
    Remote,
}

/// Which value a row shows, before any file is read.
#[derive(Clone, Copy)]
enum Showing<'a> {
    Text(&'a str),
    File(&'a Path),
    Redacted,
    Remote,
}

/// The `file:` values shown, each file read once however many rows show it; a file that
/// cannot be read is shown as `<unreadable: cause>`.
#[derive(Default)]
struct ValueFiles<'a> {
    read: HashMap<&'a Path, String>,
}

impl<'a> ValueFiles<'a> {
    fn shown<'s>(&'s mut self, what: Showing<'a>) -> Shown<'s>
    where
        'a: 's,
    {
        match what {
            Showing::Text(v) => Shown::Value(v),
            Showing::File(path) => Shown::Value(
                self.read
                    .entry(path)
                    .or_insert_with(|| read_value_file(path).unwrap_or_else(|e| format!("<unreadable: {e}>"))),
            ),
            Showing::Redacted => Shown::Redacted,
            Showing::Remote => Shown::Remote,
        }
    }
}

/// One variable of the plan: where it comes from, and the value or why it is not shown.
fn place<'a>(plan: &'a Plan, b: &'a Binding) -> (FromText<'a>, SourceText<'a>, Showing<'a>) {
    match &b.target {
        Target::Literal(_) if secret_by_default(&b.var) => {
            (FromText::Literal, SourceText::Word("value"), Showing::Redacted)
        }
        Target::Literal(v) => (FromText::Literal, SourceText::Word("value"), Showing::Text(v)),
        Target::Param { conn, key } => {
            let c = &plan.connections[*conn];
            let from = FromText::Param(&c.name, key);
            if key == ACCESS_TOKEN {
                return (from, SourceText::Word("oauth2 token"), Showing::Redacted);
            }
            let param = &c.connection.parameters[key];
            let shown = match &param.source {
                _ if param.secret => Showing::Redacted,
                Source::Value(v) => Showing::Text(v.expose()),
                Source::File(path) => Showing::File(path),
                Source::ControlPlane => Showing::Remote,
            };
            (from, SourceText::of(&param.source), shown)
        }
    }
}

/// `word`, with an `s` unless there is exactly one.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(rm -rf /)`x`"), "'$(rm -rf /)`x`'");
    }

    #[test]
    fn dotenv_quoting() {
        assert_eq!(dotenv_quote("a $b ${HOME}"), "'a $b ${HOME}'");
        assert_eq!(dotenv_quote("it's\n\"$x\""), "\"it's\n\\\"$x\\\"\"");
        assert_eq!(dotenv_quote("x\\y"), "\"x\\\\y\"");
        assert_eq!(dotenv_quote("ends in \\"), "\"ends in \\\\\"");
    }
}

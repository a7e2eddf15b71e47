//! What `check` and `env` print. Every format is safe for any value: shell output can be
//! `eval`ed, dotenv output is quoted for the common parsers, JSON is JSON.

use crate::config::files::read_value_file;
use crate::config::model::{secret_by_default, Source, ACCESS_TOKEN};
use crate::dotenv::dotenv_quote;
use crate::resolve::{Binding, Plan, Target};
use crate::secret::{Secret, REDACTED};
use std::collections::BTreeMap;
use std::fmt::Write;

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
/// values that are not secret and are known locally, the value.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let id = &plan.identity;
    let _ = writeln!(out, "component {} in project {} ({})", id.component, id.project, plan.dir.display());
    let _ = writeln!(out, "\nconnections:");
    for c in &plan.connections {
        let conn = &c.connection;
        let _ = writeln!(
            out,
            "  {:<24} {:<10} {:<9} {:<7} {}",
            c.name,
            c.kind.as_str(),
            visibility(c),
            security(c),
            conn.id
        );
        // docs/oauth.md: the grant and the method, never a key.
        if let Some(o) = &conn.oauth {
            let _ = writeln!(out, "    oauth: grant {}, clientAuth {}", o.grant.name(), o.client_auth.name());
        }
        // docs/proxy.md: the connection's own listener in `serve` and `run`.
        if let Some(p) = &conn.proxy_port {
            let _ = writeln!(out, "    proxy port: 127.0.0.1:{}", p.port);
        }
    }
    let _ = writeln!(out, "\nvariables:");
    let rows: Vec<[String; 4]> = plan
        .vars
        .iter()
        .map(|b| {
            let row = plan_row(plan, b);
            let shown = match row.value {
                Shown::Value(v) => v,
                Shown::Redacted => REDACTED.to_owned(),
                Shown::Remote => "<remote>".to_owned(),
            };
            // A line break or an escape sequence in a value must not break the table or the terminal.
            let shown = if shown.chars().any(char::is_control) { shown.escape_debug().to_string() } else { shown };
            [b.var.clone(), row.from, row.source, shown]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for [var, from, source, shown] in &rows {
        let _ = writeln!(out, "  {var:<w0$}  {from:<w1$}  {source:<w2$}  {shown}");
    }
    for (var, what) in &plan.skipped {
        let _ = writeln!(out, "  {var:<w0$}  (left out: {what} is not served by connd)");
    }
    let (n, v, w) = (plan.connections.len(), plan.vars.len(), plan.warnings.len());
    // A warning is no pass: the summary says how many there are (stderr says which).
    let ok = if w == 0 { "ok".to_owned() } else { format!("ok, with {w} {}", plural(w, "warning")) };
    let _ = writeln!(out, "\n{ok}: {n} {}, {v} {}", plural(n, "connection"), plural(v, "variable"));
    out
}

/// The plan as `check --format json` prints it, for CI: the same content as the text,
/// values redacted the same way. Shape:
/// `{component, project, dir, connections: [{name, kind, visibility, security, id, oauth: {grant, clientAuth} | null,
/// proxyPort: N | null}],
/// variables: [{name, from, source, value, redacted}], skipped: [{name, source}],
/// warnings: [{file, line, message, fix}]}`; `value` is null when it is not shown
/// (`redacted: true`, or a `remote` source, which `check` does not contact).
pub fn render_plan_json(plan: &Plan) -> String {
    use serde_json::{json, Value};
    let connections: Vec<Value> = plan
        .connections
        .iter()
        .map(|c| {
            json!({"name": c.name, "kind": c.kind.as_str(), "visibility": visibility(c),
                   "security": security(c), "id": c.connection.id,
                   "oauth": c.connection.oauth.as_ref().map(|o| json!({"grant": o.grant.name(), "clientAuth": o.client_auth.name()})),
                   "proxyPort": c.connection.proxy_port.as_ref().map(|p| p.port)})
        })
        .collect();
    let variables: Vec<Value> = plan
        .vars
        .iter()
        .map(|b| {
            let row = plan_row(plan, b);
            let (value, redacted) = match row.value {
                Shown::Value(v) => (Value::String(v), false),
                Shown::Redacted => (Value::Null, true),
                Shown::Remote => (Value::Null, false),
            };
            json!({"name": b.var, "from": row.from, "source": row.source, "value": value, "redacted": redacted})
        })
        .collect();
    let skipped: Vec<Value> = plan.skipped.iter().map(|(var, what)| json!({"name": var, "source": what})).collect();
    let warnings: Vec<Value> = plan
        .warnings
        .iter()
        .map(|w| json!({"file": w.origin.file, "line": w.origin.line, "message": w.message, "fix": w.fix}))
        .collect();
    let doc = json!({
        "component": plan.identity.component,
        "project": plan.identity.project,
        "dir": plan.dir,
        "connections": connections,
        "variables": variables,
        "skipped": skipped,
        "warnings": warnings,
    });
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

fn visibility(c: &crate::resolve::PlannedConnection) -> String {
    format!("{:?}", c.connection.visibility).to_lowercase()
}

fn security(c: &crate::resolve::PlannedConnection) -> String {
    format!("{:?}", c.connection.security).to_lowercase()
}

/// What `check` shows of a value.
enum Shown {
    Value(String),
    Redacted,
    /// From the control plane, which `check` does not contact.
    Remote,
}

struct Row {
    from: String,
    source: String,
    value: Shown,
}

/// One variable of the plan: where it comes from, and the value or why it is not shown.
fn plan_row(plan: &Plan, b: &Binding) -> Row {
    let row = |from: String, source: &str, value| Row { from, source: source.to_owned(), value };
    match &b.target {
        Target::Literal(_) if secret_by_default(&b.var) => row("(literal)".into(), "value", Shown::Redacted),
        Target::Literal(v) => row("(literal)".into(), "value", Shown::Value(v.clone())),
        Target::Param { conn, key } => {
            let c = &plan.connections[*conn];
            let from = format!("{}.{key}", c.name);
            if key == ACCESS_TOKEN {
                return row(from, "oauth2 token", Shown::Redacted);
            }
            let param = &c.connection.parameters[key];
            let value = match &param.source {
                _ if param.secret => Shown::Redacted,
                Source::Value(v) => Shown::Value(v.expose().to_owned()),
                Source::File(path) => {
                    Shown::Value(read_value_file(path).unwrap_or_else(|e| format!("<unreadable: {e}>")))
                }
                Source::ControlPlane => Shown::Remote,
            };
            Row { from, source: param.source.describe(), value }
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

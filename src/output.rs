//! What `check` and `env` print. Every format is safe for any value: shell output can be
//! `eval`ed, dotenv output is quoted for the common parsers, JSON is JSON.

use crate::config::model::{secret_by_default, Source, ACCESS_TOKEN};
use crate::resolve::{Binding, Plan, Target};
use crate::secret::{Secret, REDACTED};
use crate::source::values::read_value_file;
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

/// Single quotes where the value holds no `'`, `\` or line break: every dotenv reader
/// (systemd's `EnvironmentFile=`, docker compose, python-dotenv) takes those literally,
/// `$` included. Otherwise double quotes, written for systemd (the reader the units in
/// `deploy/systemd` use): `\`, `"`, `$` and `` ` `` escaped, line breaks kept as they are
/// (all three readers take a quoted value over several lines).
pub fn dotenv_quote(value: &str) -> String {
    if !value.contains(['\'', '\\', '\n', '\r']) {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '`' => out.push_str("\\`"),
            c => out.push(c),
        }
    }
    out.push('"');
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
            format!("{:?}", conn.visibility).to_lowercase(),
            format!("{:?}", conn.security).to_lowercase(),
            conn.id
        );
    }
    let _ = writeln!(out, "\nvariables:");
    let rows: Vec<[String; 4]> = plan.vars.iter().map(|b| plan_row(plan, b)).collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for [var, from, source, shown] in &rows {
        let _ = writeln!(out, "  {var:<w0$}  {from:<w1$}  {source:<w2$}  {shown}");
    }
    for (var, what) in &plan.skipped {
        let _ = writeln!(out, "  {var:<w0$}  (left out: {what} is not served by connd)");
    }
    let _ = writeln!(out, "\nok: {} connections, {} variables", plan.connections.len(), plan.vars.len());
    out
}

/// One line of the plan: variable, origin, source, and the value or why it is not shown.
fn plan_row(plan: &Plan, b: &Binding) -> [String; 4] {
    let (from, source, shown) = match &b.target {
        Target::Literal(_) if secret_by_default(&b.var) => {
            ("(literal)".to_owned(), "value".to_owned(), REDACTED.to_owned())
        }
        Target::Literal(v) => ("(literal)".to_owned(), "value".to_owned(), v.clone()),
        Target::Param { conn, key } => {
            let c = &plan.connections[*conn];
            let from = format!("{}.{key}", c.name);
            if key == ACCESS_TOKEN {
                (from, "oauth2 token".to_owned(), REDACTED.to_owned())
            } else {
                let param = &c.connection.parameters[key];
                let shown = if param.secret {
                    REDACTED.to_owned()
                } else {
                    match &param.source {
                        Source::Value(v) => v.expose().to_owned(),
                        Source::File(path) => read_value_file(path).unwrap_or_else(|e| format!("<unreadable: {e}>")),
                        Source::Remote => "<from the control plane>".to_owned(),
                    }
                };
                (from, param.source.describe(), shown)
            }
        }
    };
    // A line break or an escape sequence in a value must not break the table or the terminal.
    let shown = if shown.chars().any(char::is_control) { shown.escape_debug().to_string() } else { shown };
    [b.var.clone(), from, source, shown]
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
        assert_eq!(dotenv_quote("it's\n\"$x\""), "\"it's\n\\\"\\$x\\\"\"");
        assert_eq!(dotenv_quote("x\\y"), "\"x\\\\y\"");
        assert_eq!(dotenv_quote("ends in \\"), "\"ends in \\\\\"");
    }
}

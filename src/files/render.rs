//! From a planned file and the resolved values to the file's bytes (SPEC §7). JSON is
//! serde_json's, TOML the `toml` crate's, dotenv `output::dotenv_quote`'s, templates
//! minijinja's in strict mode; YAML is written with every scalar double-quoted (see
//! [`yaml_block`]) and `.properties` escaped to `java.util.Properties.load`'s grammar
//! (see [`properties_escape`]), where the crates at hand get strings wrong. Every value is a string and stays the text it
//! was (`1.10` is `"1.10"`, never a number); dotted names nest in yaml, json and toml.
//! Templates are bounded: [`FUEL`] instructions and [`MAX_OUTPUT`] bytes.

use super::{Content, PlannedFile, PlannedValue, ValueFrom};
use crate::config::filespec::FileFormat;
use crate::resolve::Plan;
use crate::secret::Secret;
use crate::source::values::Values;
use minijinja::value::{Enumerator, Object, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// The largest file connd renders: a template that expands past it is an error.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// Template instructions one render may run: enough for any file within
/// [`MAX_OUTPUT`] written by hand, far too few for a loop that never ends.
pub const FUEL: u64 = 5_000_000;

/// Why a file could not be rendered. Messages never hold a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The line of the config file the problem is on, when known.
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

impl RenderError {
    fn new(message: impl Into<String>, fix: impl Into<String>) -> RenderError {
        RenderError { line: None, message: message.into(), fix: fix.into() }
    }
}

/// Renders the files of one plan from one set of values; what templates see is built
/// once, on the first template, and shared by the rest.
pub struct Batch<'a> {
    plan: &'a Plan,
    values: &'a Values,
    inputs: std::cell::OnceCell<Inputs>,
}

impl<'a> Batch<'a> {
    pub fn new(plan: &'a Plan, values: &'a Values) -> Batch<'a> {
        Batch { plan, values, inputs: std::cell::OnceCell::new() }
    }

    /// The rendered bytes of `file`, one of the plan's.
    pub fn render(&self, file: &PlannedFile) -> Result<Vec<u8>, RenderError> {
        render(file, self.plan, self.values, || self.inputs.get_or_init(|| Inputs::real(self.plan, self.values)))
    }
}

fn render<'i>(
    file: &PlannedFile,
    plan: &Plan,
    values: &Values,
    inputs: impl FnOnce() -> &'i Inputs,
) -> Result<Vec<u8>, RenderError> {
    let out = match &file.content {
        Content::Values(entries) => {
            let resolved = entries
                .iter()
                .map(|v| Ok((v.name.as_str(), value_of(v, plan, values)?)))
                .collect::<Result<Vec<(&str, &Secret)>, RenderError>>()?;
            structured(file.format, &resolved)?
        }
        Content::Template(t) => {
            let text = template(&t.text, t.first_line, inputs())?.text;
            if text.contains('\0') {
                return Err(RenderError::new(
                    "the rendered template holds a NUL byte (from a value), which a text file cannot hold",
                    "remove the NUL byte from the value, or leave that value out of the template",
                ));
            }
            text.into_bytes()
        }
    };
    if out.len() > MAX_OUTPUT {
        return Err(RenderError::new(
            format!("the rendered file is {} bytes, over the limit of {MAX_OUTPUT} bytes", out.len()),
            "render less into one file",
        ));
    }
    Ok(out)
}

fn value_of<'a>(v: &'a PlannedValue, plan: &Plan, values: &'a Values) -> Result<&'a Secret, RenderError> {
    match &v.from {
        ValueFrom::Literal(s) => Ok(s),
        ValueFrom::Param { conn, key } => values.connections.get(*conn).and_then(|c| c.get(key)).ok_or_else(|| {
            let name = plan.connections.get(*conn).map_or("?", |c| c.name.as_str());
            RenderError {
                line: v.line,
                message: format!("no value for {key} of connection {name:?}"),
                fix: if key == crate::config::model::ACCESS_TOKEN {
                    "the token endpoint gave no access token; see the error above".to_owned()
                } else {
                    "give the parameter a value".to_owned()
                },
            }
        }),
    }
}

/// Renders name/value pairs (names already checked for the format) in a format other
/// than `template`.
pub fn structured(format: FileFormat, values: &[(&str, &Secret)]) -> Result<Vec<u8>, RenderError> {
    let nul = |name: &str| {
        RenderError::new(
            format!("value {name} holds a NUL byte, which a {} file cannot hold", format.as_str()),
            "remove the NUL byte from the value, or use json, yaml, toml or properties",
        )
    };
    let text = match format {
        FileFormat::Json => {
            let mut root = serde_json::Map::new();
            for (name, value) in values {
                let (table, leaf) = nest_json(&mut root, name);
                table.insert(leaf.to_owned(), serde_json::Value::String(value.expose().to_owned()));
            }
            let mut text = serde_json::to_string_pretty(&root).map_err(|e| RenderError::new(e.to_string(), ""))?;
            text.push('\n');
            text
        }
        FileFormat::Yaml => {
            let mut root = serde_json::Map::new();
            for (name, value) in values {
                let (table, leaf) = nest_json(&mut root, name);
                table.insert(leaf.to_owned(), serde_json::Value::String(value.expose().to_owned()));
            }
            let mut out = String::new();
            if root.is_empty() {
                out.push_str("{}\n");
            }
            yaml_block(&mut out, &root, 0);
            out
        }
        FileFormat::Toml => {
            let mut root = toml::Table::new();
            for (name, value) in values {
                let (table, leaf) = nest_toml(&mut root, name);
                table.insert(leaf.to_owned(), toml::Value::String(value.expose().to_owned()));
            }
            toml::to_string(&root).map_err(|e| RenderError::new(e.to_string(), ""))?
        }
        FileFormat::Dotenv => {
            let mut out = String::new();
            for (name, value) in values {
                if value.expose().contains('\0') {
                    return Err(nul(name));
                }
                let _ = writeln!(out, "{name}={}", crate::output::dotenv_quote(value.expose()));
            }
            out
        }
        FileFormat::Properties => {
            let mut out = String::new();
            for (name, value) in values {
                properties_escape(&mut out, name, true);
                out.push('=');
                properties_escape(&mut out, value.expose(), false);
                out.push('\n');
            }
            out
        }
        FileFormat::Template => return Err(RenderError::new("a template file has no values", "")),
    };
    Ok(text.into_bytes())
}

/// The table a dotted name's last part goes into, created on the way, and that part.
/// Validation made sure no name is both a value and a table.
fn nest_json<'a, 'n>(
    mut table: &'a mut serde_json::Map<String, serde_json::Value>,
    name: &'n str,
) -> (&'a mut serde_json::Map<String, serde_json::Value>, &'n str) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap_or(name);
    for part in parts {
        let entry = table.entry(part.to_owned()).or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !entry.is_object() {
            *entry = serde_json::Value::Object(Default::default());
        }
        table = entry.as_object_mut().expect("made an object above");
    }
    (table, leaf)
}

/// A block mapping whose keys and string values are all double-quoted. serde_yaml_ng
/// leaves `on`, `yes`, `12:30`, `1_000` and `2001-12-14` plain, which YAML 1.1 readers
/// (SnakeYAML under Spring, PyYAML) take as booleans, numbers and dates; a double-quoted
/// scalar is a string in every YAML version.
fn yaml_block(out: &mut String, table: &serde_json::Map<String, serde_json::Value>, depth: usize) {
    for (key, value) in table {
        for _ in 0..depth {
            out.push_str("  ");
        }
        yaml_quoted(out, key);
        match value {
            serde_json::Value::Object(inner) => {
                out.push_str(":\n");
                yaml_block(out, inner, depth + 1);
            }
            serde_json::Value::String(s) => {
                out.push_str(": ");
                yaml_quoted(out, s);
                out.push('\n');
            }
            _ => out.push_str(": null\n"),
        }
    }
}

/// A YAML double-quoted scalar: JSON's escapes (a JSON string is one), plus `\uXXXX`
/// for what YAML reads as a line break (NEL, LS, PS) or refuses as unprintable (DEL,
/// C1 controls, BOM, U+FFFE/FFFF).
fn yaml_quoted(out: &mut String, text: &str) {
    let json = serde_json::Value::String(text.to_owned()).to_string();
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn nest_toml<'a, 'n>(mut table: &'a mut toml::Table, name: &'n str) -> (&'a mut toml::Table, &'n str) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap_or(name);
    for part in parts {
        let entry = table.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(Default::default()));
        if !entry.is_table() {
            *entry = toml::Value::Table(Default::default());
        }
        table = entry.as_table_mut().expect("made a table above");
    }
    (table, leaf)
}

/// Escapes `text` as `java.util.Properties.store` does, so that `Properties.load`
/// (either overload) reads it back exactly: `\`, `=`, `:`, `#`, `!`, tabs and line breaks
/// escaped, spaces escaped in keys and at the start of values, and everything outside
/// printable ASCII as `\uXXXX` UTF-16 units, so the file is the same in ISO-8859-1 and
/// UTF-8. (The `java-properties` crate writes `\u1f41e` for U+1F41E and `\u1` for U+0001,
/// which Java misreads.)
pub fn properties_escape(out: &mut String, text: &str, key: bool) {
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' if key || i == 0 => out.push_str("\\ "),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
}

// ---- templates ----

/// What a template sees: `connections[NAME][KEY]` and `env[VAR]`, built once and used
/// by every template of a batch (one at a time). In a check the values are
/// placeholders; the keys are the real ones.
pub struct Inputs {
    connections: Value,
    env: Value,
    trace: SharedTrace,
}

impl Inputs {
    fn new(connections: Vec<(String, BTreeMap<String, Value>)>, env: BTreeMap<String, Value>) -> Inputs {
        let trace = SharedTrace::default();
        let names = connections.iter().map(|(n, _)| n.clone()).collect();
        let conns = connections
            .into_iter()
            .enumerate()
            .map(|(index, (name, values))| Value::from_object(Conn { index, name, values, trace: trace.clone() }))
            .collect();
        Inputs {
            connections: Value::from_object(Connections { names, conns, trace: trace.clone() }),
            env: Value::from_object(Env { vars: env, trace: trace.clone() }),
            trace,
        }
    }

    fn real(plan: &Plan, values: &Values) -> Inputs {
        let connections = plan
            .connections
            .iter()
            .zip(&values.connections)
            .map(|(p, v)| (p.name.clone(), v.iter().map(|(k, s)| (k.clone(), Value::from(s.expose()))).collect()))
            .collect();
        let env = values.env.iter().map(|(k, v)| (k.clone(), Value::from(v.expose()))).collect();
        Inputs::new(connections, env)
    }

    /// Placeholders for every key of every planned connection and every variable.
    pub fn placeholders(plan_connections: &[(String, Vec<String>)], vars: &[String]) -> Inputs {
        let placeholder = |k: &str| Value::from(format!("{k}-value"));
        Inputs::new(
            plan_connections
                .iter()
                .map(|(name, keys)| (name.clone(), keys.iter().map(|k| (k.clone(), placeholder(k))).collect()))
                .collect(),
            vars.iter().map(|v| (v.clone(), placeholder(v))).collect(),
        )
    }
}

/// A rendered template and the connection keys it read.
pub struct Rendered {
    pub text: String,
    /// (connection position, key) pairs read while rendering.
    pub read: BTreeSet<(usize, String)>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rendered(<{} bytes redacted>, read {:?})", self.text.len(), self.read)
    }
}

/// What the template's objects report: the last lookup that found nothing (to name it
/// in the error) and every key read.
#[derive(Default)]
struct Trace {
    missing: Option<String>,
    read: BTreeSet<(usize, String)>,
}

type SharedTrace = Arc<Mutex<Trace>>;

fn trace(t: &SharedTrace) -> parking_lot::MutexGuard<'_, Trace> {
    t.lock()
}

/// `connections`: looks connections up by name.
struct Connections {
    names: Vec<String>,
    conns: Vec<Value>,
    trace: SharedTrace,
}

/// One connection: looks keys up, recording each read.
struct Conn {
    index: usize,
    name: String,
    values: BTreeMap<String, Value>,
    trace: SharedTrace,
}

/// `env`: the component's variables.
struct Env {
    vars: BTreeMap<String, Value>,
    trace: SharedTrace,
}

// Debug output of the objects names keys, never values.
impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}
impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

fn list(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.map(|n| n.as_ref().to_owned()).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl Object for Connections {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        match self.names.iter().position(|n| n == name) {
            Some(i) => Some(self.conns[i].clone()),
            None => {
                trace(&self.trace).missing = Some(format!(
                    "connection {name:?} is not referenced by the component (referenced: {})",
                    list(self.names.iter())
                ));
                None
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.names.iter().map(|n| Value::from(n.as_str())).collect())
    }
}

impl Object for Conn {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        let mut t = trace(&self.trace);
        match self.values.get(k) {
            Some(v) => {
                t.read.insert((self.index, k.to_owned()));
                Some(v.clone())
            }
            None => {
                t.missing = Some(format!(
                    "connection {:?} has no key {k:?} (its keys: {})",
                    self.name,
                    list(self.values.keys())
                ));
                None
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.values.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

impl Object for Env {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        let v = self.vars.get(k).cloned();
        if v.is_none() {
            trace(&self.trace).missing = Some(format!(
                "the component has no variable {k:?}{} (its variables: {})",
                crate::config::suggest::did_you_mean(k, self.vars.keys().map(String::as_str)),
                list(self.vars.keys())
            ));
        }
        v
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.vars.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

/// The one template environment: strict, bounded by [`FUEL`] (counted per render), our
/// `urlencode`, trailing newlines kept. Built once: building it costs more than most
/// renders.
fn environment() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_keep_trailing_newline(true);
        env.add_filter("urlencode", urlencode);
        env
    })
}

/// `urlencode` for any part of a URL: every byte outside RFC 3986's unreserved set
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded, `/`, `@` and `:` included, so that a
/// password is safe in a DSN's userinfo. (minijinja's builtin, like Jinja's, keeps `/`.)
fn urlencode(value: &Value) -> String {
    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Collects output up to [`MAX_OUTPUT`] bytes, then fails the render.
struct Bounded {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            self.over = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `text` strictly: an unknown connection, key, variable or name is an error
/// (never an empty string), and so is running past [`FUEL`] or [`MAX_OUTPUT`].
/// `first_line` is the config-file line of the template's first line.
pub fn template(text: &str, first_line: usize, inputs: &Inputs) -> Result<Rendered, RenderError> {
    // A line within the template, else the template's first line.
    let at = |line: Option<usize>| Some(line.map_or(first_line, |l| first_line + l.saturating_sub(1)));
    let compiled = environment().template_from_str(text).map_err(|e| RenderError {
        line: at(e.line()),
        message: format!("the template does not parse: {}", e.detail().unwrap_or(&e.kind().to_string())),
        fix: "correct the template's syntax (every `{% for %}` and `{% if %}` needs its `{% end... %}`)".to_owned(),
    })?;
    let shared = inputs.trace.clone();
    *trace(&shared) = Trace::default();
    let ctx = minijinja::context! { connections => inputs.connections.clone(), env => inputs.env.clone() };
    let mut out = Bounded { buf: Vec::new(), over: false };
    let result = compiled.render_captured_to(ctx, &mut out).map(drop);
    let mut t = trace(&shared);
    if let Err(e) = result {
        let line = at(e.line());
        if out.over {
            return Err(RenderError {
                line,
                message: format!("the template expands past {MAX_OUTPUT} bytes"),
                fix: "render less into one file; a loop that expands hugely is refused".to_owned(),
            });
        }
        let (message, fix) = match e.kind() {
            ErrorKind::UndefinedError => (
                t.missing.take().map_or_else(|| "the template uses an undefined name".to_owned(), |m| format!("the template uses an undefined value: {m}")),
                "use the names of referenced connections, their keys and the component's variables: connections[\"NAME\"].KEY, env.VAR",
            ),
            ErrorKind::OutOfFuel => (
                format!("the template ran past its limit of {FUEL} steps"),
                "a loop that never ends, or that runs very long, is refused: bound it",
            ),
            // The kind only: a detail may quote a value.
            kind => (format!("the template failed: {kind}"), "correct the template"),
        };
        return Err(RenderError { line, message, fix: fix.to_owned() });
    }
    let text = String::from_utf8(out.buf)
        .map_err(|_| RenderError::new("the template's output is not UTF-8", "correct the template"))?;
    Ok(Rendered { text, read: std::mem::take(&mut t.read) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs::placeholders(&[("db".into(), vec!["Password".into(), "HostName".into()])], &["LEVEL".into()])
    }

    #[test]
    fn templates_are_strict_and_name_what_is_missing() {
        let ok = template("{{ connections['db'].HostName }}:{{ env.LEVEL }}\n", 5, &inputs()).unwrap();
        assert_eq!(ok.text, "HostName-value:LEVEL-value\n");
        assert_eq!(ok.read, BTreeSet::from([(0, "HostName".to_owned())]));
        let e = template("a\n{{ connections['nope'].HostName }}", 5, &inputs()).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("connection \"nope\" is not referenced"), "{e:?}");
        let e = template("{{ connections.db.Port }}", 5, &inputs()).unwrap_err();
        assert!(e.message.contains("has no key \"Port\" (its keys: HostName, Password)"), "{e:?}");
        let e = template("{{ env.NOPE }}", 1, &inputs()).unwrap_err();
        assert!(e.message.contains("no variable \"NOPE\""), "{e:?}");
        let url = template("{{ 'p@ss:w/rd é' | urlencode }}", 1, &inputs()).unwrap();
        assert_eq!(url.text, "p%40ss%3Aw%2Frd%20%C3%A9");
        let e = template("{{ nope }}", 1, &inputs()).unwrap_err();
        assert!(e.message.contains("undefined"), "{e:?}");
    }

    #[test]
    fn templates_are_bounded() {
        let e = template("{% for x in [1] %}\nnever ends", 10, &inputs()).unwrap_err();
        assert!(e.message.contains("does not parse"), "{e:?}");
        let e =
            template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", 1, &inputs())
                .unwrap_err();
        assert!(e.message.contains("limit of"), "{e:?}");
        let e = template("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", 1, &inputs()).unwrap_err();
        assert!(e.message.contains("expands past"), "{e:?}");
    }

    #[test]
    fn properties_escaping() {
        let mut out = String::new();
        properties_escape(&mut out, "a b=c", true);
        out.push('=');
        properties_escape(&mut out, " x:y#\u{1}é\u{1F41E}\\", false);
        assert_eq!(out, "a\\ b\\=c=\\ x\\:y\\#\\u0001\\u00E9\\uD83D\\uDC1E\\\\");
    }

    #[test]
    fn values_stay_strings_and_names_nest() {
        let one = Secret::new("1.10");
        let yes = Secret::new("on");
        let vals = [("hr.serviceUrl", &one), ("hr.enabled", &yes), ("level", &yes)];
        let toml = String::from_utf8(structured(FileFormat::Toml, &vals).unwrap()).unwrap();
        assert_eq!(toml, "level = \"on\"\n\n[hr]\nenabled = \"on\"\nserviceUrl = \"1.10\"\n");
        let json = String::from_utf8(structured(FileFormat::Json, &vals).unwrap()).unwrap();
        assert!(json.contains("\"serviceUrl\": \"1.10\""), "{json}");
        let nul = Secret::new("a\0b");
        assert!(structured(FileFormat::Dotenv, &[("A", &nul)]).unwrap_err().message.contains("NUL"));
    }
}

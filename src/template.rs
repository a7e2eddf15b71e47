//! The template engine of files (docs/files.md): minijinja in strict mode over
//! `connections[NAME][KEY]` and `env[VAR]`, bounded by [`FUEL`] and [`MAX_OUTPUT`], with
//! the connection keys each render read. Used to check templates when planning and to
//! render them (`files::render`).

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
    pub fn new(message: impl Into<String>, fix: impl Into<String>) -> RenderError {
        RenderError { line: None, message: message.into(), fix: fix.into() }
    }
}

/// What a template sees: `connections[NAME][KEY]` and `env[VAR]`, built once and used
/// by every template of a batch (one at a time). In a check the values are
/// placeholders; the keys are the real ones.
pub struct Inputs {
    connections: Value,
    env: Value,
    trace: SharedTrace,
}

impl Inputs {
    /// Inputs from each connection's name and values (in `Plan::connections` order) and
    /// the variables.
    pub fn new(connections: Vec<(String, BTreeMap<String, Value>)>, env: BTreeMap<String, Value>) -> Inputs {
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

//! Files (docs/files.md): the files a workload reads, rendered from the connections' values.
//! They are planned with the rest of the plan (`fileplan`, below `resolve`).
//! - `render`: a planned file plus values → bytes, one writer per format.
//! - `write`: atomic writes under the root (temp file, mode and owner, fsync, rename).
//! - `keep`: the task that keeps files current in `run` and `serve`, with `record`, what
//!   it wrote, kept on disk for the next process.
//!
//! `render_all` and `write_all` are the one-shot path of `render` and `exec`: every file
//! is rendered before the first is written, so a bad value writes nothing.

pub mod keep;
pub mod record;
pub mod render;
pub mod write;

use crate::config::Origin;
pub use crate::fileplan::{Content, PlannedFile, PlannedValue, Template, ValueFrom};
use crate::resolve::Plan;
use crate::source::values::Values;
use std::path::PathBuf;

/// A file that could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A render failure: the config (a template, a value for the format) is at fault.
    #[error("{origin}: cannot render {}: {}\n  fix: {}", path.display(), error.message, error.fix)]
    Render { path: PathBuf, origin: Origin, error: Box<render::RenderError> },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: write::WriteError,
    },
}

/// A render failure is the config's to fix (78); a file that cannot be written is
/// EX_CANTCREAT (73).
impl crate::error::Classify for FileError {
    fn class(&self) -> crate::error::Class {
        match self {
            FileError::Render { .. } => crate::error::Class::Config,
            FileError::Write { .. } => crate::error::Class::CantCreate,
        }
    }
}

/// Renders one file of `batch`, its error located in the config.
pub fn render_one(batch: &render::Batch<'_>, file: &PlannedFile) -> Result<Vec<u8>, FileError> {
    batch.render(file).map_err(|error| {
        let origin = match error.line {
            Some(line) => Origin::at(&file.origin.file, line),
            None => file.origin.clone(),
        };
        FileError::Render { path: file.path.clone(), origin, error: Box::new(error) }
    })
}

/// Renders every planned file; the first failure stops it, before anything is written.
pub fn render_all(plan: &Plan, values: &Values) -> Result<Vec<Vec<u8>>, FileError> {
    let batch = render::Batch::new(plan, values);
    plan.files.iter().map(|f| render_one(&batch, f)).collect()
}

/// Renders, then writes every planned file under `plan.files_root`; returns how many
/// changed. Nothing is written when any file fails to render.
pub fn write_all(plan: &Plan, values: &Values) -> Result<usize, FileError> {
    let rendered = render_all(plan, values)?;
    let root = crate::fileplan::resolve_root(&plan.files_root)
        .map_err(|why| FileError::Write { path: plan.files_root.clone(), source: write::WriteError::Escapes(why) })?;
    let mut changed = 0;
    for (file, bytes) in plan.files.iter().zip(rendered) {
        let outcome = write::write(&root, file, &bytes)
            .map_err(|source| FileError::Write { path: file.target.clone(), source })?;
        if outcome == write::Outcome::Written {
            changed += 1;
        }
    }
    Ok(changed)
}

/// The values of dotenv files a python-dotenv reader would lose (see
/// `dotenv::python_dotenv_loses`), each as (where, message, fix).
pub fn dotenv_hazards(plan: &Plan, values: &Values) -> Vec<(Origin, String, &'static str)> {
    use crate::config::model::FileFormat;
    let mut out = Vec::new();
    for f in plan.files.iter().filter(|f| f.format == FileFormat::Dotenv) {
        let Content::Values(entries) = &f.content else { continue };
        for v in entries {
            let value = match &v.from {
                ValueFrom::Literal(s) => Some(s),
                ValueFrom::Param { conn, key } => values.connections.get(*conn).and_then(|c| c.get(key)),
            };
            if value.is_some_and(|s| crate::dotenv::python_dotenv_loses(s.expose())) {
                let (message, fix) =
                    crate::dotenv::python_dotenv_warning(&format!("value {} of {}", v.name, f.path.display()));
                let origin = v.line.map_or_else(|| f.origin.clone(), |line| Origin::at(&f.origin.file, line));
                out.push((origin, message, fix));
            }
        }
    }
    out
}

/// One value of a file as `check` shows it.
struct ValueRow {
    /// The value's name, or `(template)` for what a template reads.
    name: String,
    /// `(literal)`, or `connection.KEY`.
    from: String,
    /// `value`, `file:PATH`, `remote`, `oauth2 token`.
    source: String,
    /// The value, when it is local and not secret.
    value: Option<String>,
    redacted: bool,
}

/// Each file's values as `check` shows them, redacted as variables are.
fn rows(plan: &Plan, file: &PlannedFile) -> Vec<ValueRow> {
    use crate::config::model::{secret_by_default, Source, ACCESS_TOKEN};
    let param = |name: String, conn: usize, key: &str| -> ValueRow {
        let c = &plan.connections[conn];
        let from = format!("{}.{key}", c.name);
        if key == ACCESS_TOKEN {
            return ValueRow { name, from, source: "oauth2 token".into(), value: None, redacted: true };
        }
        let Some(p) = c.connection.parameters.get(key) else {
            return ValueRow { name, from, source: String::new(), value: None, redacted: false };
        };
        let value = match &p.source {
            Source::Value(v) if !p.secret => Some(v.expose().to_owned()),
            Source::Value(_) | Source::File(_) | Source::ControlPlane => None,
        };
        ValueRow { name, from, source: p.source.describe(), value, redacted: p.secret }
    };
    match &file.content {
        Content::Values(values) => values
            .iter()
            .map(|v| match &v.from {
                ValueFrom::Literal(s) => {
                    let last = v.name.rsplit('.').next().unwrap_or(&v.name);
                    let redacted = secret_by_default(last);
                    let value = (!redacted).then(|| s.expose().to_owned());
                    ValueRow { name: v.name.clone(), from: "(literal)".into(), source: "value".into(), value, redacted }
                }
                ValueFrom::Param { conn, key } => param(v.name.clone(), *conn, key),
            })
            .collect(),
        Content::Template(t) => t.reads.iter().map(|(conn, key)| param("(template)".into(), *conn, key)).collect(),
    }
}

/// The files as `check` lists them: path, format, mode (and owner), and each value's
/// source, redacted as variables are. Empty when the plan has no files.
pub fn describe(plan: &Plan) -> String {
    use crate::secret::REDACTED;
    use std::fmt::Write;
    if plan.files.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nfiles:\n");
    for f in &plan.files {
        let owner = match (f.owner, f.group) {
            (None, None) => String::new(),
            (o, g) => format!(
                "  owner {}:{}",
                o.map_or("-".into(), |o| o.to_string()),
                g.map_or("-".into(), |g| g.to_string())
            ),
        };
        let _ = writeln!(out, "  {}  {}  {:04o}{owner}  ({})", f.path.display(), f.format.as_str(), f.mode, f.origin);
        let rows = rows(plan, f);
        let w0 = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.from.chars().count()).max().unwrap_or(0);
        for r in rows {
            let shown = match (&r.value, r.redacted) {
                (_, true) => REDACTED.to_owned(),
                (Some(v), false) => v.clone(),
                (None, false) => String::new(),
            };
            // A line break or an escape sequence in a value must not break the table.
            let shown = if shown.chars().any(char::is_control) { shown.escape_debug().to_string() } else { shown };
            let _ = writeln!(out, "    {:<w0$}  {:<w1$}  {}  {shown}", r.name, r.from, r.source);
        }
    }
    let _ = writeln!(out, "\nok: {} files under {}", plan.files.len(), plan.files_root.display());
    out
}

/// The files as `check --format json` lists them, under `"files"`: the same facts as
/// [`describe`], values redacted the same way (`null`, with `"redacted": true`).
pub fn describe_json(plan: &Plan) -> serde_json::Value {
    use serde_json::json;
    let files: Vec<serde_json::Value> = plan
        .files
        .iter()
        .map(|f| {
            let values: Vec<serde_json::Value> = rows(plan, f)
                .into_iter()
                .map(|r| json!({"name": r.name, "from": r.from, "source": r.source, "value": r.value, "redacted": r.redacted}))
                .collect();
            // Paths as text, U+FFFD for bytes that are not UTF-8, as the text output writes
            // them: `json!` would abort on such a path.
            json!({
                "path": f.path.to_string_lossy(), "target": f.target.to_string_lossy(), "format": f.format.as_str(),
                "mode": format!("{:04o}", f.mode), "owner": f.owner, "group": f.group,
                "file": f.origin.file.to_string_lossy(), "line": f.origin.line, "values": values,
            })
        })
        .collect();
    serde_json::Value::Array(files)
}

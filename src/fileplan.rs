//! The files of a plan (docs/files.md): [`PlannedFile`] and its parts, and [`build`], from
//! checked file entries to planned files with the checks that need the whole directory.
//! `resolve` builds them with the rest of the plan; `files/` renders and writes them.
//! A value's connection must be referenced and have the key; a template is rendered once
//! on placeholders, so that an unknown connection, key or variable, a syntax error or a
//! runaway loop is a config error at load (with the line), not at the first write; every
//! path lands under `--files-root`, once, and does not leave the root through a symlink.

use crate::config::model::ACCESS_TOKEN;
use crate::config::model::{Body, Connection, FileFormat, FileSpec, FileValue, ValueSource};
use crate::config::{Diagnostics, Origin};
use crate::secret::Secret;
use crate::template::{self, Inputs};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file connd renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// As declared (`mountPath` + `name`, or `path`): what messages and `check` show.
    pub path: PathBuf,
    /// `path` under `--files-root`: where it is written.
    pub target: PathBuf,
    pub format: FileFormat,
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub content: Content,
    pub origin: Origin,
    /// Positions in `Plan::connections` of the connections whose `AccessToken` it uses.
    pub tokens: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Values(Vec<PlannedValue>),
    Template(Arc<Template>),
}

/// One value of a structured file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedValue {
    /// Dotted for nesting formats.
    pub name: String,
    pub from: ValueFrom,
    /// The config-file line of the entry.
    pub line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueFrom {
    Literal(Secret),
    Param { conn: usize, key: String },
}

/// A template's text and where it starts in its config file. Its Debug shows no text.
#[derive(PartialEq, Eq)]
pub struct Template {
    pub text: String,
    pub first_line: usize,
    /// The (connection position, key) pairs it read when checked, for `check`.
    pub reads: Vec<(usize, String)>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({} bytes at line {})", self.text.len(), self.first_line)
    }
}

/// The keys a connection offers (`config::model`'s rule).
fn keys(c: &Connection) -> Vec<String> {
    c.keys().map(str::to_owned).collect()
}

/// `path` (absolute) joined under `root`.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// `path` with its deepest existing ancestor resolved (symlinks followed) and the
/// missing rest appended: what it will be once created (the missing part holds no
/// symlink). An error only when nothing of it can be resolved.
fn resolve_existing(path: &Path) -> std::io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match std::fs::canonicalize(at) {
            Ok(real) => return Ok(missing.iter().rev().fold(real, |p, part| p.join(part))),
            Err(e) => match (at.parent(), at.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name.to_owned());
                    at = parent;
                }
                _ => return Err(e),
            },
        }
    }
}

/// The files root resolved (symlinks followed) as far as it exists: what
/// [`escapes_root`] compares against.
pub fn resolve_root(root: &Path) -> Result<PathBuf, String> {
    resolve_existing(root).map_err(|e| format!("the files root {} cannot be resolved: {e}", root.display()))
}

/// Why `target`'s folder leaves the root (`real_root`, from [`resolve_root`]) through a
/// symlink, if it does: the folder is resolved as far as it exists and must stay inside
/// the root (which need not exist yet: it is created). The target itself may be a
/// symlink: it is replaced, never followed.
pub fn escapes_root(real_root: &Path, target: &Path) -> Option<String> {
    let folder = target.parent()?;
    match resolve_existing(folder) {
        Ok(real) if real.starts_with(real_root) => None,
        Ok(real) => Some(format!(
            "{} resolves to {}, outside the files root {}",
            folder.display(),
            real.display(),
            real_root.display()
        )),
        Err(e) => Some(format!("{} cannot be resolved: {e}", folder.display())),
    }
}

/// Plans `specs` (component.yaml's first, then `kind: File` documents) against the
/// planned connections (name and connection, in `Plan::connections` order) and the
/// variables' names. `referenced` names every connection reference,
/// planned or not: one that failed is reported once, where it is referenced. Values
/// from unsupported sources are left out under `ignore_unsupported`, else an error.
pub fn build(
    specs: &[FileSpec],
    referenced: &[&str],
    connections: &[(&str, &Connection)],
    vars: &[&str],
    root: &Path,
    ignore_unsupported: bool,
    diags: &mut Diagnostics,
) -> Vec<PlannedFile> {
    let mut planner = Planner {
        referenced,
        connections,
        vars,
        root,
        real_root: resolve_root(root),
        ignore_unsupported,
        by_target: HashMap::new(),
        placeholders: None,
    };
    specs.iter().filter_map(|spec| planner.file(spec, diags)).collect()
}

/// What planning a file checks against, and what it remembers from one file to the next.
struct Planner<'a> {
    referenced: &'a [&'a str],
    connections: &'a [(&'a str, &'a Connection)],
    vars: &'a [&'a str],
    root: &'a Path,
    /// The root resolved, or why it cannot be.
    real_root: Result<PathBuf, String>,
    ignore_unsupported: bool,
    /// Where each target was first planned: two entries may not write one file.
    by_target: HashMap<PathBuf, Origin>,
    /// What templates are checked against, built on the first template.
    placeholders: Option<Inputs>,
}

/// A value left out of its file, which then is not planned: its error was reported, or
/// its reference's was.
struct Unplanned;

impl Planner<'_> {
    /// One file, or `None` when it has errors (each reported) or is to be checked only.
    fn file(&mut self, spec: &FileSpec, diags: &mut Diagnostics) -> Option<PlannedFile> {
        let before = diags.len();
        let target = under_root(self.root, &spec.path);
        // An entry with errors of its own has no place to check; its contents are checked below.
        if !spec.check_only {
            self.place(spec, &target, diags)?;
        }
        let mut tokens = Vec::new();
        let content = match &spec.body {
            Body::Values(values) => self.values(spec, values, &mut tokens, diags),
            Body::Template { text, first_line } => self.template(spec, text, *first_line, &mut tokens, diags),
        };
        let content = content.ok()?;
        if diags.len() > before || spec.check_only {
            return None;
        }
        tokens.sort_unstable();
        tokens.dedup();
        Some(PlannedFile {
            path: spec.path.clone(),
            target,
            format: spec.format,
            mode: spec.mode,
            owner: spec.owner,
            group: spec.group,
            content,
            origin: spec.origin.clone(),
            tokens,
        })
    }

    /// Claims `target` for `spec`: no other entry writes it and it stays under the root.
    fn place(&mut self, spec: &FileSpec, target: &Path, diags: &mut Diagnostics) -> Option<()> {
        if let Some(first) = self.by_target.get(target) {
            diags.error(
                spec.origin.clone(),
                format!("two entries write {} (the first is at {first})", spec.path.display()),
                "give each file one entry: merge the two, or change one path",
            );
            return None;
        }
        self.by_target.insert(target.to_path_buf(), spec.origin.clone());
        if let Some(why) = self.real_root.as_ref().map_or_else(|e| Some(e.clone()), |r| escapes_root(r, target)) {
            diags.error(
                spec.origin.clone(),
                format!("{} would leave the files root: {why}", spec.path.display()),
                "choose a path whose folders are inside --files-root (no symlink out of it)",
            );
            return None;
        }
        Some(())
    }

    /// A structured file's values, every one checked; `Unplanned` when any is.
    fn values(
        &self,
        spec: &FileSpec,
        values: &[FileValue],
        tokens: &mut Vec<usize>,
        diags: &mut Diagnostics,
    ) -> Result<Content, Unplanned> {
        let mut planned = Vec::with_capacity(values.len());
        let mut unplanned = false;
        for v in values {
            match self.value(spec, v, tokens, diags) {
                Ok(Some(from)) => planned.push(PlannedValue { name: v.name.clone(), from, line: v.origin.line }),
                Ok(None) => {}
                Err(Unplanned) => unplanned = true,
            }
        }
        if unplanned {
            return Err(Unplanned);
        }
        Ok(Content::Values(planned))
    }

    /// Where one value comes from; `None` when it is left out (unsupported, and so asked).
    fn value(
        &self,
        spec: &FileSpec,
        v: &FileValue,
        tokens: &mut Vec<usize>,
        diags: &mut Diagnostics,
    ) -> Result<Option<ValueFrom>, Unplanned> {
        let (name, key) = match &v.source {
            ValueSource::Literal(text) => return Ok(Some(ValueFrom::Literal(text.as_str().into()))),
            ValueSource::Unsupported(_) if self.ignore_unsupported => return Ok(None),
            ValueSource::Unsupported(what) => {
                diags.error(
                    v.origin.clone(),
                    format!("value {} of {} comes from {what}, which connd cannot serve", v.name, spec.path.display()),
                    "give the value in the platform's configuration, or pass --ignore-unsupported to leave it out",
                );
                return Err(Unplanned);
            }
            ValueSource::ConnectionRef { name, key } => (name, key),
        };
        let Some(i) = self.connections.iter().position(|(n, _)| *n == name) else {
            // A reference that failed has said why.
            if !self.referenced.contains(&name.as_str()) {
                diags.error(
                    v.origin.clone(),
                    format!(
                        "value {} of {} takes {key} from connection {name:?}, which the component does not reference",
                        v.name,
                        spec.path.display()
                    ),
                    "add the connection to dependencies.connectionReferences, or correct the name",
                );
            }
            return Err(Unplanned);
        };
        let offered = keys(self.connections[i].1);
        if !offered.iter().any(|k| k == key) {
            diags.error(
                v.origin.clone(),
                format!(
                    "value {} of {} takes {key} from connection {name:?}, which has no such key",
                    v.name,
                    spec.path.display()
                ),
                format!("use one of: {}", offered.join(", ")),
            );
            return Err(Unplanned);
        }
        if key == ACCESS_TOKEN {
            tokens.push(i);
        }
        Ok(Some(ValueFrom::Param { conn: i, key: key.clone() }))
    }

    /// A template, rendered once on placeholders to find errors and what it reads.
    fn template(
        &mut self,
        spec: &FileSpec,
        text: &str,
        first_line: usize,
        tokens: &mut Vec<usize>,
        diags: &mut Diagnostics,
    ) -> Result<Content, Unplanned> {
        let connections = self.connections;
        let vars = self.vars;
        let inputs = self.placeholders.get_or_insert_with(|| {
            let conns: Vec<(String, Vec<String>)> = connections.iter().map(|(n, c)| (n.to_string(), keys(c))).collect();
            let names: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
            Inputs::placeholders(&conns, &names)
        });
        let rendered = match template::template(text, first_line, inputs) {
            Ok(rendered) => rendered,
            Err(e) => {
                let origin = e.line.map_or_else(|| spec.origin.clone(), |l| Origin::at(&spec.origin.file, l));
                diags.error(origin, format!("template of {}: {}", spec.path.display(), e.message), e.fix);
                return Err(Unplanned);
            }
        };
        tokens.extend(rendered.read.iter().filter(|(_, k)| k == ACCESS_TOKEN).map(|(i, _)| *i));
        // A token read only on some branch is still renewed and re-rendered.
        if text.contains(ACCESS_TOKEN) {
            tokens.extend(rendered.read.iter().map(|(i, _)| *i).filter(|&i| connections[i].1.is_oauth()));
        }
        let reads = rendered.read.iter().cloned().collect();
        Ok(Content::Template(Arc::new(Template { text: text.to_owned(), first_line, reads })))
    }
}

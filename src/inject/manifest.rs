//! `connd inject` (docs/kubernetes.md): a stream of YAML manifests in, the same stream out
//! with connd added to the pod templates that opt in. Documents keep their order; a
//! `List`'s items are handled one by one; other kinds pass through with their meaning
//! unchanged (re-serialised: comments are not kept). Any problem anywhere refuses the
//! whole stream, every problem listed: nothing is printed, exit 78.
//!
//! Boundary: documents, kinds and where each kind keeps its pod template; the
//! transformation of a template is `pod`'s.

use super::{pod, InjectError, Object, Problem, Settings};
use crate::error::{Class, Classify};
use serde_yaml::Value;
use std::io::Read;
use std::path::Path;

/// Largest manifest stream read (a `kubectl get -o yaml` of a big namespace fits).
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// The kinds with a pod template, and the path from the object to it.
const TEMPLATES: [(&str, &[&str]); 7] = [
    ("Pod", &[]),
    ("Deployment", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
];

/// Why a stream was refused. Exit 78.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {source_name}: {error}")]
    Read { source_name: String, error: std::io::Error },
    #[error("{source_name}:{line}: invalid YAML: {message} (fix: correct the YAML at that line)")]
    Yaml { source_name: String, line: usize, message: String },
    /// Every refused object of the stream, each with where its document starts.
    #[error("{}", refused_text(.source_name, .refused))]
    Refused { source_name: String, refused: Vec<(usize, InjectError)> },
}

fn refused_text(source_name: &str, refused: &[(usize, InjectError)]) -> String {
    let mut lines = vec![format!("nothing was written: {} object(s) cannot be injected", refused.len())];
    for (line, e) in refused {
        lines.push(format!("{source_name}:{line}: {}:", e.object));
        lines.extend(e.problems.iter().map(|p| format!("  {p}")));
    }
    lines.join("\n")
}

impl Classify for ManifestError {
    fn class(&self) -> Class {
        Class::Config
    }
}

/// Reads the manifests: the file at `path`, or stdin for `-`. Returns the text and the
/// name errors give it (`<stdin>` for stdin).
pub fn read_input(path: &Path) -> Result<(String, String), ManifestError> {
    let stdin = path.as_os_str() == "-";
    let source_name = if stdin { "<stdin>".to_owned() } else { path.display().to_string() };
    let fail = |error| ManifestError::Read { source_name: source_name.clone(), error };
    let reader: Box<dyn Read> = match stdin {
        true => Box::new(std::io::stdin()),
        false => Box::new(std::fs::File::open(path).map_err(fail)?),
    };
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        let error = std::io::Error::other(format!("over {MAX_INPUT_BYTES} bytes; split the stream"));
        return Err(fail(error));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| fail(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 ({e})"))))?;
    Ok((text, source_name))
}

/// Injects into every opted-in template of `text` (named `source_name` in errors) and
/// returns the new stream, its documents separated by `---`.
pub fn inject_stream(text: &str, source_name: &str, settings: &Settings) -> Result<String, ManifestError> {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut refused = Vec::new();
    for doc in crate::config::files::documents(text) {
        let mut value: Value = serde_yaml::from_str(doc.text).map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_owned(),
            // The parser may report the end of the stream, past the document's last line.
            line: e.location().map_or(doc.first_line, |l| doc.first_line + l.line() - 1).min(last_line(&doc)),
            message: without_location(&e.to_string()),
        })?;
        if value.is_null() {
            continue;
        }
        let mut errors = Vec::new();
        object(&mut value, settings, &mut errors);
        refused.extend(errors.into_iter().map(|e| (doc.first_line, e)));
        if refused.is_empty() {
            if !out.is_empty() {
                out.push_str("---\n");
            }
            let text = super::yaml::to_string(&value);
            out.push_str(&text);
        }
    }
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(ManifestError::Refused { source_name: source_name.to_owned(), refused })
    }
}

fn last_line(doc: &crate::config::files::Document<'_>) -> usize {
    doc.first_line + doc.text.trim_end_matches('\n').lines().count().saturating_sub(1)
}

/// The parser's message without its " at line L column C" (the line is given apart).
fn without_location(text: &str) -> String {
    text.find(" at line ").map_or(text, |i| &text[..i]).to_owned()
}

/// Injects into one object (a `List`'s items one by one), collecting refusals.
fn object(value: &mut Value, settings: &Settings, errors: &mut Vec<InjectError>) {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
    if kind.ends_with("List") {
        if let Some(items) = value.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                object(item, settings, errors);
            }
            return;
        }
    }
    let name =
        |field: &str| value.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("").to_owned();
    let who = Object { kind: kind.clone(), namespace: name("namespace"), name: name("name") };
    let path = TEMPLATES.iter().find(|(k, _)| *k == kind).map(|(_, path)| *path);
    if let Some(problem) = misplaced(value, path) {
        errors.push(InjectError { object: who, problems: vec![problem] });
        return;
    }
    let Some(path) = path else { return };
    let Some(template) = path.iter().try_fold(&mut *value, |v, key| v.get_mut(*key)) else { return };
    match pod::inject(template, &who, settings) {
        Ok(pod::Outcome::Injected(new)) => *template = new,
        Ok(pod::Outcome::Unchanged) => {}
        Err(e) => errors.push(e),
    }
}

/// An annotation of connd's on an object that is not a pod template: on a workload's own
/// metadata (it belongs on its template), or on a kind without pods.
fn misplaced(value: &Value, path: Option<&[&str]>) -> Option<Problem> {
    let holders: &[&[&str]] = match path {
        Some([]) => return None,
        Some(p) if p.len() == 4 => &[&["metadata"], &["spec", "jobTemplate", "metadata"]],
        _ => &[&["metadata"]],
    };
    for holder in holders {
        let at = holder.iter().try_fold(value, |v, key| v.get(*key));
        let annotations = at.and_then(|m| m.get("annotations")).and_then(Value::as_mapping);
        let Some(name) = annotations
            .into_iter()
            .flat_map(|a| a.keys())
            .filter_map(Value::as_str)
            .find(|k| k.starts_with("connd.dev/"))
        else {
            continue;
        };
        let fix = match path {
            Some(p) => format!("move the connd.dev/ annotations to {}.metadata.annotations", p.join(".")),
            None => "connd injects into pod templates only (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, \
                     Job, CronJob): annotate one of those, or remove the annotation"
                .to_owned(),
        };
        let place = holder.join(".");
        return Some(Problem::annotation(name, format!("is on {place}, where connd does not read it"), fix));
    }
    None
}

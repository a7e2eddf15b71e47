//! `connd inject` (docs/kubernetes.md): a stream of YAML manifests in, the same stream out
//! with connd added to the pod templates that opt in. Documents keep their order; a
//! `List`'s items are handled one by one; other kinds pass through with their meaning
//! unchanged (re-serialised: comments are not kept). A workload's own `connd.dev/`
//! annotations (what `kubectl annotate deployment/NAME` sets) count as its template's. Any problem anywhere refuses the
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
        // `<<: *defaults` merge keys, as kubectl's reader applies them: the output has the
        // merged mappings (written back, a `<<` key would be quoted and lose its meaning).
        value.apply_merge().map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_owned(),
            line: doc.first_line,
            message: without_location(&e.to_string()),
        })?;
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
    let outer = outer_annotations(value, path);
    let Some(template) = path.iter().try_fold(&mut *value, |v, key| v.get_mut(*key)) else { return };
    let candidate = with_annotations(template, outer);
    match pod::inject(candidate, &who, settings) {
        Ok(pod::Outcome::Injected(new)) => *template = new,
        Ok(pod::Outcome::Unchanged) => {}
        Err(e) => errors.push(e),
    }
}

/// The `connd.dev/` annotations of the metadata around a workload's template (its own,
/// and a CronJob's `jobTemplate`'s): what `kubectl annotate deployment/NAME` sets. They
/// count as the template's, which wins where both set one.
fn outer_annotations(value: &Value, path: &[&str]) -> Vec<(Value, Value)> {
    let holders: &[&[&str]] = match path.len() {
        0 => &[],
        2 => &[&["metadata"]],
        _ => &[&["metadata"], &["spec", "jobTemplate", "metadata"]],
    };
    let mut found = Vec::new();
    for holder in holders {
        let at = holder.iter().try_fold(value, |v, key| v.get(*key));
        let annotations = at.and_then(|m| m.get("annotations")).and_then(Value::as_mapping).into_iter().flatten();
        let connd = annotations.filter(|(k, _)| k.as_str().is_some_and(|k| k.starts_with("connd.dev/")));
        found.extend(connd.map(|(k, v)| (k.clone(), v.clone())));
    }
    found
}

/// `template` with `outer` added to its annotations where it has none of that name.
fn with_annotations(template: &Value, outer: Vec<(Value, Value)>) -> Value {
    let mut t = template.clone();
    if outer.is_empty() {
        return t;
    }
    let meta = t.as_mapping_mut().map(|t| t.entry("metadata".into()).or_insert(Value::Mapping(Default::default())));
    if let Some(Value::Mapping(meta)) = meta {
        let a = meta.entry("annotations".into()).or_insert(Value::Null);
        if a.is_null() {
            *a = Value::Mapping(Default::default());
        }
        if let Value::Mapping(a) = a {
            for (k, v) in outer {
                a.entry(k).or_insert(v);
            }
        }
    }
    t
}

/// An annotation of connd's on an object of a kind without pods.
fn misplaced(value: &Value, path: Option<&[&str]>) -> Option<Problem> {
    if path.is_some() {
        return None;
    }
    let annotations = value.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_mapping);
    let name = annotations
        .into_iter()
        .flat_map(|a| a.keys())
        .filter_map(Value::as_str)
        .find(|k| k.starts_with("connd.dev/"))?;
    Some(Problem::annotation(
        name,
        "is on an object without pods, where connd does not read it",
        "connd injects into pod templates only (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, \
         CronJob): annotate one of those, or remove the annotation",
    ))
}

//! From raw documents to the validated model: each check reports into the shared
//! diagnostics and keeps going, so one run shows every error. Only the problems of a
//! single document are found here; cross-references (visibility, references, variable
//! names) are `resolve`'s.
//!
//! By section: `parse` (one YAML document to its raw model, and parser errors in words),
//! `names` (the platform's grammars), `descriptor` (`kind: Connection`), `component`
//! (`component.yaml`); this module reads the documents of connd's own files by kind.

mod component;
mod descriptor;
mod names;
mod parse;

pub use component::component_yaml;
pub use names::{parse_resource_ref, parse_uuid, valid_name, NAME_RULE, RESOURCE_REF_GRAMMAR};

use crate::config::diag::{Diagnostics, Origin};
use crate::config::files::Document;
use crate::config::model::{self, Connection, Identity};
use crate::config::{raw, suggest};
use parse::{kind_of, parse, refuse_deep};
use std::path::Path;
use std::sync::Arc;

/// The kinds of connd's own documents.
pub const KINDS: [&str; 3] = ["Connection", "Component", "File"];

/// What a file of connd documents contributes.
#[derive(Debug, Default)]
pub struct Documents {
    pub identities: Vec<(Identity, Origin)>,
    pub connections: Vec<Arc<Connection>>,
    /// `kind: File` documents.
    pub files: Vec<model::FileSpec>,
    /// Some document failed to parse: a reference to it would be a confusing second error.
    pub had_errors: bool,
    /// Descriptors with errors, by the name and id they give where those could be read:
    /// a reference to one of them is not reported again (its error is above).
    pub failed: Vec<FailedDescriptor>,
    /// A `kind: Component` document had errors: "which component is this" would repeat it.
    pub failed_identity: bool,
}

/// What could be read of a descriptor that has errors.
#[derive(Debug, Default, Clone)]
pub struct FailedDescriptor {
    pub name: Option<String>,
    pub id: Option<String>,
}

/// Reads one document of a file other than `component.yaml`.
pub fn connd_document(path: &Arc<Path>, doc: &Document<'_>, out: &mut Documents, diags: &mut Diagnostics) {
    let before = diags.len();
    if refuse_deep(path, doc, diags) {
        out.had_errors = true;
        return;
    }
    let origin = Origin::at(path, doc.first_line);
    let kind = kind_of(doc);
    match kind.as_deref() {
        Some("Connection") => {
            if let Some(raw) = parse::<raw::ConnectionDoc>(path, doc, "Connection", diags) {
                if let Some(c) = descriptor::connection(raw, path, doc, diags) {
                    out.connections.push(Arc::new(c));
                }
            }
            if diags.len() > before {
                out.failed.push(failed_descriptor(doc));
            }
        }
        Some("File") => {
            if let Some(raw) = parse::<raw::FileDoc>(path, doc, "File", diags) {
                out.files.extend(crate::config::filespec::file_document(raw, path, doc, diags));
            }
        }
        Some("Component") => {
            if let Some(raw) = parse::<raw::ComponentDoc>(path, doc, "Component", diags) {
                let line = doc.line_of("name", 0).unwrap_or(doc.first_line);
                out.identities.push((Identity { project: raw.project, component: raw.name }, Origin::at(path, line)));
            }
            out.failed_identity |= diags.len() > before;
        }
        // Likely a descriptor with its kind mistyped or left out: what it names is
        // explained here, not again by the references to it.
        Some(other) => {
            diags.error(
                origin,
                format!("unknown kind {other:?}{}", suggest::did_you_mean(other, KINDS)),
                "use `kind: Connection`, `kind: Component` or `kind: File`; the component's own config belongs in component.yaml",
            );
            out.failed.push(failed_descriptor(doc));
        }
        None => {
            diags.error(
                origin,
                "document has no `kind`",
                "add `kind: Connection` or `kind: Component` as its first line",
            );
            out.failed.push(failed_descriptor(doc));
        }
    }
    out.had_errors |= diags.len() > before;
}

/// The `name` and `id` of a descriptor that failed, read leniently.
fn failed_descriptor(doc: &Document<'_>) -> FailedDescriptor {
    /// Only these two fields, so that whatever else is wrong does not stop the read.
    #[derive(serde::Deserialize)]
    struct Names {
        name: Option<String>,
        id: Option<String>,
    }
    match serde_yaml::from_str::<Names>(doc.text) {
        Ok(n) => FailedDescriptor { name: n.name, id: n.id.and_then(|id| parse_uuid(&id)) },
        // Not even YAML: the top-level `name:` and `id:` lines, as written.
        Err(_) => {
            let line = |key: &str| {
                let prefix = format!("{key}:");
                let v = doc.text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
                Some(v.split(" #").next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned())
            };
            FailedDescriptor { name: line("name"), id: line("id").and_then(|id| parse_uuid(&id)) }
        }
    }
}

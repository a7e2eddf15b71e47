//! `component.yaml`, section by section: `schemaVersion`, connection and service
//! references, `configurations.env`, and warnings on keys one edit away from those read.

use super::names::{parse_resource_ref, parse_uuid, valid_name, NAME_RULE, RESOURCE_REF_GRAMMAR};
use super::parse::{parse_slow, refuse_deep};
use crate::config::diag::{Diagnostics, Origin};
use crate::config::files::{Document, EntryLines, SourceFile};
use crate::config::model::{self, valid_env_name, ComponentSpec};
use crate::config::{events, raw, suggest};
use std::path::Path;
use std::sync::Arc;

/// Reads `component.yaml`, section by section.
pub fn component_yaml(file: &SourceFile, diags: &mut Diagnostics) -> Option<ComponentSpec> {
    let docs = crate::config::files::documents(&file.text);
    let [doc] = docs.as_slice() else {
        let message = if docs.is_empty() {
            "component.yaml is empty"
        } else {
            "component.yaml holds more than one YAML document"
        };
        diags.error(
            Origin::file(&file.path),
            message,
            "component.yaml is the component's own config: one document with schemaVersion, dependencies and configurations",
        );
        return None;
    };
    // One copy of the path, which every reference's origin shares.
    let path: &Arc<Path> = &Arc::from(file.path.as_path());
    if refuse_deep(path, doc, diags) {
        return None;
    }
    // One read of the text serves the model and the typo warnings, where the fast path
    // takes the document (no anchors: see `parse`).
    let events = if doc.text.contains('&') { None } else { events::read(doc.text) };
    let raw = match events.as_ref().and_then(|e| e.deserialize::<raw::ComponentYaml>()) {
        Some(raw) => Some(raw),
        None => parse_slow::<raw::ComponentYaml>(path, doc, "component.yaml", diags),
    };
    // After the parse, which refuses alias bombs. Also when the parse failed: a typo of
    // a required key (`connectionConfg`) is said as a typo beside the "missing field"
    // error it causes.
    typo_warnings(path, doc, events.as_ref(), diags);
    let raw = raw?;
    let before = diags.len();
    let lines = doc.entry_lines();
    let schema_version = schema_version(raw.schema_version, path, doc, diags);
    let connection_refs = connection_references(raw.dependencies.connection_references, path, &lines, diags);
    let service_refs = service_references(raw.dependencies.service_references, path, &lines, diags);
    if raw.configurations.is_some() && raw.configuration.is_some() {
        diags.error(
            Origin::at(path, doc.line_of("configuration", 0).unwrap_or(doc.first_line)),
            "component.yaml has both `configurations` and `configuration`",
            "keep one: `configurations` is the current spelling",
        );
    }
    let configurations = raw.configurations.or(raw.configuration).unwrap_or_default();
    let env = env_entries(configurations.env, path, &lines, diags);
    let files = if configurations.file.is_empty() {
        Vec::new()
    } else {
        crate::config::filespec::component_files(configurations.file, path, doc, diags)
    };
    let spec = ComponentSpec { schema_version: schema_version.to_owned(), connection_refs, service_refs, env, files };
    (diags.len() == before).then_some(spec)
}

/// `schemaVersion`, normalised to `1.0`, `1.1` or `1.2` (empty when it is not one).
fn schema_version(raw: Option<raw::Scalar>, path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> &'static str {
    let written = raw.map(|s| s.0).unwrap_or_default();
    let normalised = match written.as_str() {
        "1" | "1.0" => "1.0",
        "1.1" => "1.1",
        "1.2" => "1.2",
        _ => "",
    };
    if normalised.is_empty() {
        let line = doc.line_of("schemaVersion", 0).unwrap_or(doc.first_line);
        let what =
            if written.is_empty() { "no schemaVersion".to_owned() } else { format!("schemaVersion {written:?}") };
        diags.error(
            Origin::at(path, line),
            format!("component.yaml has {what}"),
            "set `schemaVersion: 1.2` (connd reads 1.0, 1.1 and 1.2)",
        );
    }
    normalised
}

/// `dependencies.connectionReferences`.
fn connection_references(
    raw: Vec<raw::ConnectionReference>,
    path: &Arc<Path>,
    lines: &EntryLines<'_>,
    diags: &mut Diagnostics,
) -> Vec<model::ConnectionRef> {
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let origin = Origin::shared(path, lines.line("name", &r.name));
        if !valid_name(&r.name) {
            diags.error(
                origin.clone(),
                format!("connection reference name {:?} breaks the naming rule", r.name),
                NAME_RULE,
            );
        }
        match parse_resource_ref(&r.resource_ref) {
            Some(resource_ref) => out.push(model::ConnectionRef { name: r.name, resource_ref, origin }),
            None => diags.error(
                Origin::at(path, lines.line("resourceRef", &r.resource_ref)),
                format!("resourceRef {:?} of connection reference {:?} is not valid", r.resource_ref, r.name),
                RESOURCE_REF_GRAMMAR,
            ),
        }
    }
    out
}

/// `dependencies.serviceReferences` (legacy): only the mapped keys are injected.
fn service_references(
    raw: Vec<raw::ServiceReference>,
    path: &Arc<Path>,
    lines: &EntryLines<'_>,
    diags: &mut Diagnostics,
) -> Vec<model::ServiceRef> {
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let origin = Origin::shared(path, lines.line("name", &r.name));
        let Some(connection_id) = parse_uuid(&r.connection_config) else {
            diags.error(
                Origin::at(path, lines.line("connectionConfig", &r.connection_config)),
                format!("connectionConfig {:?} of service reference {:?} is not a UUID", r.connection_config, r.name),
                "set connectionConfig to the connection's ID, e.g. 19d2648b-d29c-4452-afdd-1b9311e81412",
            );
            continue;
        };
        let mut env = Vec::new();
        for m in r.env {
            if valid_env_name(&m.to) {
                env.push((m.from, m.to));
            } else {
                diags.error(
                    Origin::at(path, lines.line("to", &m.to)),
                    format!("{:?} is not a valid environment variable name", m.to),
                    "use letters, digits and '_', not starting with a digit",
                );
            }
        }
        out.push(model::ServiceRef { name: r.name, connection_id, env, origin });
    }
    out
}

/// `configurations.env` (or `configuration.env`).
fn env_entries(
    raw: Vec<raw::EnvEntry>,
    path: &Arc<Path>,
    lines: &EntryLines<'_>,
    diags: &mut Diagnostics,
) -> Vec<model::EnvEntry> {
    let mut out = Vec::with_capacity(raw.len());
    for e in raw {
        let origin = Origin::shared(path, lines.line("name", &e.name));
        if !valid_env_name(&e.name) {
            diags.error(
                origin,
                format!("{:?} is not a valid environment variable name", e.name),
                "use letters, digits and '_', not starting with a digit",
            );
            continue;
        }
        let Some(value) = crate::config::filespec::value_source(
            &format!("variable {}", e.name),
            (e.value, e.value_from, e.connection_ref.is_some()),
            &origin,
            diags,
        ) else {
            continue;
        };
        out.push(model::EnvEntry { name: e.name, value, origin });
    }
    out
}

/// The keys connd reads at each place of `component.yaml` (list items take their list's
/// place); empty where connd reads nothing and so has nothing to compare with.
fn keys_read_at(place: &[&str]) -> &'static [&'static str] {
    match place {
        [] => &["schemaVersion", "dependencies", "configurations", "configuration"],
        ["dependencies"] => &["connectionReferences", "serviceReferences"],
        ["dependencies", "connectionReferences"] => &["name", "resourceRef"],
        ["dependencies", "serviceReferences"] => &["name", "connectionConfig", "env"],
        ["dependencies", "serviceReferences", "env"] => &["from", "to"],
        ["configurations" | "configuration"] => &["env", "file"],
        ["configurations" | "configuration", "env"] => &["name", "value", "valueFrom"],
        ["configurations" | "configuration", "env", "valueFrom"] => &["connectionRef", "configGroupRef", "configForm"],
        ["configurations" | "configuration", "env", "valueFrom", "connectionRef"] => &["name", "key"],
        ["configurations" | "configuration", "file"] => &["name", "mountPath", "type", "values"],
        ["configurations" | "configuration", "file", "values"] => &["name", "value", "valueFrom"],
        _ => &[],
    }
}

/// Warns on every key one edit away from a key connd reads at that place (docs/config.md):
/// `component.yaml` accepts keys it does not know, so `dependancies:` or `envs:` would
/// otherwise drop variables without a word. `events` is the document as read already,
/// if it was.
fn typo_warnings(path: &Path, doc: &Document<'_>, events: Option<&events::Events>, diags: &mut Diagnostics) {
    // Where the next search for a key's line starts (document-relative), per key: the
    // walk goes in document order, so a typo written twice is found at each line.
    let mut from = std::collections::HashMap::<String, usize>::new();
    let mut visit = |place: &[&str], key: &str| {
        let known = keys_read_at(place);
        if known.contains(&key) {
            return true;
        }
        if let Some(meant) = known.iter().find(|k| suggest::one_edit(key, k)) {
            let under = if place.is_empty() { String::new() } else { format!(" under `{}`", place.join(".")) };
            let start = from.entry(key.to_owned()).or_default();
            let line = doc.line_of(key, *start);
            if let Some(line) = line {
                *start = line - doc.first_line + 1;
            }
            diags.warn(
                Origin::at(path, line.unwrap_or(doc.first_line)),
                format!("`{key}`{under} is not a key connd reads, and is ignored: did you mean `{meant}`?"),
                format!("rename it to `{meant}`"),
            );
        }
        false
    };
    if events.and_then(|e| e.walk_keys(&mut visit)).is_some() {
        return;
    }
    if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(doc.text) {
        events::walk_tree(&value, &mut visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert!(valid_env_name("_A1"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}

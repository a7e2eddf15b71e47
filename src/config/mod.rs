//! The connection-config directory: reading it (`files`), the YAML as written (`raw`),
//! the checks (`validate`) and the validated model (`model`). `load` runs them all and
//! collects every problem into one set of diagnostics.

pub mod diag;
pub mod files;
pub mod model;
pub mod raw;
pub mod validate;

pub use diag::{ConfigError, Diagnostic, Diagnostics, Origin};

use model::{ComponentSpec, Connection, Identity};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Everything the directory holds that passed the checks of single documents.
#[derive(Debug, Default)]
pub struct Loaded {
    pub component: Option<ComponentSpec>,
    pub identities: Vec<(Identity, Origin)>,
    pub connections: Vec<Arc<Connection>>,
    /// Some descriptor failed to parse, so a missing reference may be explained above.
    pub had_descriptor_errors: bool,
}

/// Reads and checks every file of `dir`.
pub fn load(dir: &Path, diags: &mut Diagnostics) -> Loaded {
    let before = diags.len();
    let files = files::read_dir(dir, diags);
    let mut loaded = Loaded::default();
    if files.is_empty() && diags.len() == before {
        diags.error(
            Origin::file(dir),
            "the config directory holds no YAML files",
            "mount or write component.yaml and the connection descriptors (*.yaml) into it, or pass --config-dir",
        );
        return loaded;
    }
    let mut docs = validate::Documents::default();
    let mut saw_component = false;
    for part in parse_parallel(&files) {
        if let Some(component) = part.component {
            saw_component = true;
            loaded.component = component;
        }
        docs.identities.extend(part.docs.identities);
        docs.connections.extend(part.docs.connections);
        docs.had_errors |= part.docs.had_errors;
        diags.extend(part.diags);
    }
    if !saw_component && !files.is_empty() {
        diags.error(
            Origin::file(dir.join(files::COMPONENT_FILE)),
            "the config directory has no component.yaml",
            "add the component's component.yaml (the platform's .choreo/component.yaml) to the directory",
        );
    }
    let mut seen: HashMap<&str, &Arc<Connection>> = HashMap::new();
    for c in &docs.connections {
        if let Some(first) = seen.insert(&c.id, c) {
            diags.error(
                c.origin.clone(),
                format!("duplicate connection id {} (also used by {:?} at {})", c.id, first.name, first.origin),
                "every connection needs its own UUID: remove the copy or correct the id",
            );
        }
    }
    loaded.identities = docs.identities;
    loaded.connections = docs.connections;
    loaded.had_descriptor_errors = docs.had_errors;
    loaded
}

/// What one run of the parser over some files found.
#[derive(Default)]
struct Parsed {
    /// `Some` when the files held component.yaml (inner `None`: it was invalid).
    component: Option<Option<ComponentSpec>>,
    docs: validate::Documents,
    diags: Diagnostics,
}

fn parse_files(files: &[files::SourceFile]) -> Parsed {
    let mut out = Parsed::default();
    for file in files {
        if file.name == files::COMPONENT_FILE {
            out.component = Some(validate::component_yaml(file, &mut out.diags));
        } else {
            validate::connd_documents(file, &mut out.docs, &mut out.diags);
        }
    }
    out
}

/// Below this much YAML a second thread costs more than it saves.
const PARALLEL_BYTES: usize = 8 * 1024;

/// Parses the files on every core, in contiguous runs of about equal size; the results
/// come back in file order, so diagnostics read the same however the work was split.
fn parse_parallel(files: &[files::SourceFile]) -> Vec<Parsed> {
    let total: usize = files.iter().map(|f| f.text.len()).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len());
    if workers < 2 || total < PARALLEL_BYTES {
        return vec![parse_files(files)];
    }
    let mut chunks = Vec::with_capacity(workers);
    let (mut start, mut bytes) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        bytes += f.text.len();
        if bytes * workers >= total * (chunks.len() + 1) && chunks.len() + 1 < workers {
            chunks.push(&files[start..=i]);
            start = i + 1;
        }
    }
    chunks.push(&files[start..]);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks[1..].iter().map(|chunk| scope.spawn(|| parse_files(chunk))).collect();
        let mut parts = vec![parse_files(chunks[0])];
        parts.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))));
        parts
    })
}

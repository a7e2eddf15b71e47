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

/// Everything the directory holds that passed the checks of single documents.
#[derive(Debug, Default)]
pub struct Loaded {
    pub component: Option<ComponentSpec>,
    pub identities: Vec<(Identity, Origin)>,
    pub connections: Vec<Connection>,
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
    for file in &files {
        if file.name == files::COMPONENT_FILE {
            saw_component = true;
            loaded.component = validate::component_yaml(file, diags);
        } else {
            validate::connd_documents(file, &mut docs, diags);
        }
    }
    if !saw_component && !files.is_empty() {
        diags.error(
            Origin::file(dir.join(files::COMPONENT_FILE)),
            "the config directory has no component.yaml",
            "add the component's component.yaml (the platform's .choreo/component.yaml) to the directory",
        );
    }
    let mut seen: HashMap<&str, &Connection> = HashMap::new();
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

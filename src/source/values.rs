//! From a plan to values: literal and file parameters are read here; control-plane parameters
//! and OAuth tokens arrive already fetched in [`Fetched`]. A missing value is an error
//! that names the connection, the key and the cause; nothing is ever left out silently.

use crate::config::model::{Source, ACCESS_TOKEN};
use crate::error::{Class, Classify};
use crate::resolve::{Plan, Target};
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// `file:` sources are read by the config layer's rule, so that planning can check them.
pub use crate::config::files::{read_value_file, MAX_VALUE_FILE_BYTES};

/// Values obtained from outside the directory, by connection id.
#[derive(Debug, Default, Clone)]
pub struct Fetched {
    /// Control-plane parameters: connection id -> key -> value.
    pub params: HashMap<String, HashMap<String, Secret>>,
    /// OAuth access tokens: connection id -> token.
    pub tokens: HashMap<String, Secret>,
}

/// The resolved values of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// The component's variables, by name.
    pub env: BTreeMap<String, Secret>,
    /// Each planned connection's parameters (same order as `Plan::connections`).
    pub connections: Vec<BTreeMap<String, Secret>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("cannot read {key} of connection {connection:?} from {}: {cause}", path.display())]
    File { connection: String, key: String, path: PathBuf, cause: String },
    #[error("no value for {key} of connection {connection:?}: {cause}")]
    Missing { connection: String, key: String, cause: String },
    #[error("{key} of connection {connection:?} contains a NUL byte, which no environment can hold")]
    Nul { connection: String, key: String },
}

/// A file that cannot be read or holds a NUL is the directory's to fix; a missing value
/// could not be obtained.
impl Classify for ValueError {
    fn class(&self) -> Class {
        match self {
            ValueError::File { .. } | ValueError::Nul { .. } => Class::Config,
            ValueError::Missing { .. } => Class::Unavailable,
        }
    }
}

/// The value of one parameter; `None` for a control-plane one when `fetched` is `None`.
/// `file:` sources read in one resolution, by path: many connections often share one
/// file (a mounted key), and one resolution should see one content of it.
type FileCache = HashMap<PathBuf, Result<Secret, String>>;

fn param_value(
    p: &crate::resolve::PlannedConnection,
    key: &str,
    source: &Source,
    fetched: Option<&Fetched>,
    files: &mut FileCache,
) -> Result<Option<Secret>, ValueError> {
    let value = match source {
        Source::Value(v) => v.clone(),
        Source::File(path) => cached_file(p, key, path, files)?.clone(),
        Source::ControlPlane => {
            let Some(fetched) = fetched else { return Ok(None) };
            fetched.params.get(&p.connection.id).and_then(|m| m.get(key)).cloned().ok_or_else(|| {
                ValueError::Missing {
                    connection: p.name.clone(),
                    key: key.to_owned(),
                    cause: "the control plane has not provided it".into(),
                }
            })?
        }
    };
    no_nul(p, key, &value)?;
    Ok(Some(value))
}

/// Refuses a value holding a NUL byte, which no environment variable can carry.
fn no_nul(p: &crate::resolve::PlannedConnection, key: &str, value: &Secret) -> Result<(), ValueError> {
    if value.expose().contains('\0') {
        return Err(ValueError::Nul { connection: p.name.clone(), key: key.to_owned() });
    }
    Ok(())
}

/// The parameters `keys` of `p`, resolved as [`materialize`] resolves them (the control
/// plane's from `fetched`, left out when it is `None`); a key `p` does not have is left
/// out. Reads `file:` values (blocking).
pub fn resolve_keys(
    p: &crate::resolve::PlannedConnection,
    keys: &[&str],
    fetched: Option<&Fetched>,
) -> Result<BTreeMap<String, Secret>, ValueError> {
    let mut files = FileCache::new();
    let mut out = BTreeMap::new();
    for key in keys {
        let Some(param) = p.connection.parameters.get(key) else { continue };
        if let Some(value) = param_value(p, key, &param.source, fetched, &mut files)? {
            out.insert((*key).to_owned(), value);
        }
    }
    Ok(out)
}

/// Reads every local value of the planned connections (`value:` and `file:` sources) and
/// checks it as [`materialize`] would, without copying one: `check` meets each error
/// `env` would. The `file:` values read are kept for [`local_vars`].
pub fn check_local(plan: &Plan) -> Result<LocalFiles, ValueError> {
    let mut files = FileCache::new();
    for p in &plan.connections {
        for (key, param) in &p.connection.parameters {
            let value = match &param.source {
                Source::Value(v) => v,
                Source::File(path) => cached_file(p, key, path, &mut files)?,
                Source::ControlPlane => continue,
            };
            no_nul(p, key, value)?;
        }
    }
    Ok(LocalFiles(files))
}

/// The `file:` values [`check_local`] read, by path.
pub struct LocalFiles(FileCache);

/// The variables whose values are local (literals, `value:` and `file:` sources), in the
/// plan's order (by name), each as its index in `plan.vars` and its value, borrowed from
/// the plan and `files`; control-plane parameters and tokens are left out. After
/// [`check_local`] passed, every one is there. `check` measures them against the kernel's
/// limits.
pub fn local_vars<'a>(plan: &'a Plan, files: &'a LocalFiles) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    plan.vars.iter().enumerate().filter_map(move |(i, b)| {
        let value = match &b.target {
            Target::Literal(v) => v.as_str(),
            Target::Param { conn, key } => match &plan.connections[*conn].connection.parameters.get(key)?.source {
                Source::Value(v) => v.expose(),
                Source::File(path) => files.0.get(path)?.as_ref().ok()?.expose(),
                Source::ControlPlane => return None,
            },
        };
        Some((i, value))
    })
}

/// The content of `path` for `key` of `p`, read once per resolution.
fn cached_file<'c>(
    p: &crate::resolve::PlannedConnection,
    key: &str,
    path: &std::path::Path,
    files: &'c mut FileCache,
) -> Result<&'c Secret, ValueError> {
    // Looked up before the path is copied for a key: thousands of parameters may share one file.
    let read = if files.contains_key(path) {
        &files[path]
    } else {
        files.entry(path.to_path_buf()).or_insert_with(|| read_value_file(path).map(Secret::new))
    };
    read.as_ref().map_err(|cause| ValueError::File {
        connection: p.name.clone(),
        key: key.to_owned(),
        path: path.to_path_buf(),
        cause: cause.clone(),
    })
}

/// Resolves every parameter of every planned connection, then the variables.
pub fn materialize(plan: &Plan, fetched: &Fetched) -> Result<Values, ValueError> {
    let mut connections = Vec::with_capacity(plan.connections.len());
    let mut files = FileCache::new();
    for p in &plan.connections {
        let mut values = BTreeMap::new();
        for (key, param) in &p.connection.parameters {
            if let Some(value) = param_value(p, key, &param.source, Some(fetched), &mut files)? {
                values.insert(key.clone(), value);
            }
        }
        if let Some(token) = fetched.tokens.get(&p.connection.id) {
            values.insert(ACCESS_TOKEN.to_owned(), token.clone());
        }
        connections.push(values);
    }
    let mut env = BTreeMap::new();
    for b in &plan.vars {
        let value = match &b.target {
            Target::Literal(v) => Secret::new(v.clone()),
            Target::Param { conn, key } => connections[*conn].get(key).cloned().ok_or_else(|| ValueError::Missing {
                connection: plan.connections[*conn].name.clone(),
                key: key.clone(),
                cause: if key == ACCESS_TOKEN {
                    "no access token was obtained from the token endpoint".into()
                } else {
                    "the parameter has no value".into()
                },
            })?,
        };
        env.insert(b.var.clone(), value);
    }
    Ok(Values { env, connections })
}

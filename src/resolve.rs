//! From the loaded directory to the plan: who the component is, which connections it
//! references (and may see), and the name and origin of every variable it gets.
//!
//! Boundary: no value is read here (`source::values` does that), and every check of a
//! single document is `config`'s; this module checks what documents say of each other.

use crate::config::model::valid_env_name;
use crate::config::model::{
    self, ComponentSpec, Connection, ConnectionRef, Identity, RefKind, ValueSource, Visibility,
};
use crate::config::suggest::did_you_mean;
use crate::config::{self, ConfigError, Diagnostic, Diagnostics, Origin};
// foldhash's maps: names and ids are hashed tens of thousands of times on a large directory.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What shapes the plan besides the directory.
#[derive(Debug, Clone)]
pub struct Options {
    pub project: Option<String>,
    pub component: Option<String>,
    /// `CHOREO` by default; empty means no prefix.
    pub env_prefix: String,
    /// Skip `configGroupRef` / `configForm` variables instead of failing.
    pub ignore_unsupported: bool,
    /// A control plane is configured, so `remote: true` parameters can be fetched.
    pub control_plane: bool,
    /// Where files (docs/files.md) are written: every file's path is joined under it.
    pub files_root: PathBuf,
    /// `--strict`: every warning about the directory is an error.
    pub strict: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            project: None,
            component: None,
            env_prefix: "CHOREO".into(),
            ignore_unsupported: false,
            control_plane: false,
            files_root: PathBuf::from("/"),
            strict: false,
        }
    }
}

/// A connection the component references.
#[derive(Debug, Clone)]
pub struct PlannedConnection {
    /// The name the component uses for it (the reference name, or the descriptor's name
    /// for a legacy service reference).
    pub name: String,
    pub kind: RefKind,
    pub connection: Arc<Connection>,
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `configurations.env[].value`.
    Literal(String),
    /// A key of `Plan::connections[conn]`.
    Param { conn: usize, key: String },
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub var: String,
    pub target: Target,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: PathBuf,
    pub identity: Identity,
    pub connections: Vec<PlannedConnection>,
    /// Sorted by variable name; names are unique.
    pub vars: Vec<Binding>,
    /// Variables left out under `--ignore-unsupported`, with the source that was not served.
    pub skipped: Vec<(String, &'static str)>,
    /// The files to render (docs/files.md), in declaration order.
    pub files: Vec<crate::fileplan::PlannedFile>,
    /// `--files-root`: every file's target is under it.
    pub files_root: PathBuf,
    /// Likely mistakes that leave the directory valid (a key one edit away from one
    /// connd reads): to be shown, not to stop anything.
    pub warnings: Vec<Diagnostic>,
}

impl Plan {
    /// Whether any referenced connection needs the control plane.
    pub fn needs_control_plane(&self) -> bool {
        self.connections.iter().any(|c| c.connection.needs_control_plane())
    }

    /// Whether resolving needs the sources: some parameter is from the control plane, or
    /// some variable or file takes a token.
    pub fn needs_fetch(&self) -> bool {
        self.needs_control_plane() || self.token_vars().next().is_some()
    }

    /// The connections' own proxy ports (docs/proxy.md), each with the name of the
    /// connection it serves. Ports are unique among descriptors; a descriptor referenced
    /// twice serves its port under its first reference's name.
    pub fn proxy_ports(&self) -> std::collections::BTreeMap<u16, &str> {
        let mut ports = std::collections::BTreeMap::new();
        for c in &self.connections {
            if let Some(p) = &c.connection.proxy_port {
                ports.entry(p.port).or_insert(c.name.as_str());
            }
        }
        ports
    }

    /// The plan's warnings (likely typos), one log record each.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
    }

    /// Indexes of connections whose `AccessToken` some variable or file uses.
    pub fn token_vars(&self) -> impl Iterator<Item = usize> + '_ {
        let vars = self.vars.iter().filter_map(|b| match &b.target {
            Target::Param { conn, key } if key == model::ACCESS_TOKEN => Some(*conn),
            _ => None,
        });
        vars.chain(self.files.iter().flat_map(|f| f.tokens.iter().copied()))
    }
}

/// `<PREFIX>_<NAME>_<KEY>`, each part upper-cased with runs of other characters as one `_`.
pub fn default_var_name(prefix: &str, name: &str, key: &str) -> String {
    // One string, sized once: a directory of thousands of connections names every key.
    let mut out = String::with_capacity(prefix.len() + name.len() + key.len() + 2);
    for part in [prefix, name, key] {
        let before = out.len();
        if before > 0 {
            out.push('_');
        }
        let start = out.len();
        normalise(part, &mut out);
        // A part with nothing left adds no `_`.
        if out.len() == start {
            out.truncate(before);
        }
    }
    out
}

/// Appends `part` upper-cased, its runs of other characters as one `_` between the
/// letters and digits kept (none before the first or after the last).
fn normalise(part: &str, out: &mut String) {
    let start = out.len();
    let mut gap = false;
    // By byte: every byte of a non-ASCII character is a gap, as the character is.
    for b in part.bytes() {
        let b = b.to_ascii_uppercase();
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            if gap && out.len() > start {
                out.push('_');
            }
            gap = false;
            out.push(char::from(b));
        } else {
            gap = true;
        }
    }
}

/// Loads `dir` and builds its plan, or reports every problem found.
pub fn plan(dir: &Path, opts: &Options) -> Result<Plan, ConfigError> {
    let mut diags = Diagnostics::default();
    let loaded = config::load(dir, &mut diags);
    let plan = build(dir, loaded, opts, &mut diags);
    if opts.strict {
        diags.warnings_as_errors();
    }
    match plan {
        Some(mut plan) if diags.is_empty() => {
            plan.warnings = diags.warnings().to_vec();
            Ok(plan)
        }
        _ => Err(ConfigError { dir: dir.to_path_buf(), diagnostics: diags }),
    }
}

fn identity(dir: &Path, loaded: &config::Loaded, opts: &Options, diags: &mut Diagnostics) -> Option<Identity> {
    let overridden = opts.project.is_some() && opts.component.is_some();
    let declared = match loaded.identities.as_slice() {
        [] => None,
        [(id, _)] => Some(id.clone()),
        // Both flags given: the documents say nothing that is used.
        [..] if overridden => None,
        [(_, first), (_, second), ..] => {
            diags.error(
                second.clone(),
                format!("a second `kind: Component` document (the first is at {first})"),
                "keep exactly one `kind: Component` in the directory",
            );
            None
        }
    };
    let project = opts.project.clone().or_else(|| declared.as_ref().map(|d| d.project.clone()));
    let component = opts.component.clone().or_else(|| declared.as_ref().map(|d| d.component.clone()));
    match (project, component) {
        (Some(project), Some(component)) => Some(Identity { project, component }),
        _ => {
            // Nothing read, or a `kind: Component` with errors: the error above says why.
            if loaded.identities.len() <= 1 && loaded.read_any && !loaded.failed_identity {
                diags.error(
                    Origin::file(dir),
                    "connd does not know which component this is",
                    "add a document `kind: Component` with `project` and `name`, or pass --project and --component",
                );
            }
            None
        }
    }
}

/// Why `c` is not visible to `me`, if it is not.
fn invisible(c: &Connection, me: &Identity) -> Option<String> {
    if c.project != me.project {
        return Some(format!(
            "connection {:?} belongs to project {:?}, but this component is in project {:?}: a connection is visible only inside its own project",
            c.name, c.project, me.project
        ));
    }
    match (&c.visibility, &c.owner) {
        (Visibility::Component, Some(owner)) if owner != &me.component => Some(format!(
            "connection {:?} is a component connection of {owner:?}: only its owner may use it, and this component is {:?}",
            c.name, me.component
        )),
        _ => None,
    }
}

/// The plan in three steps: who the component is, which connections it references and
/// may see, and the name of every variable. Each step reports what it finds wrong and
/// goes on, so that one run shows every problem.
fn build(dir: &Path, loaded: config::Loaded, opts: &Options, diags: &mut Diagnostics) -> Option<Plan> {
    let me = identity(dir, &loaded, opts, diags);
    let spec = loaded.component.as_ref()?;
    let me = me?;
    let mut refs = References::new(&loaded, &me);
    let accepted = refs.connection_refs(spec, diags);
    let mapped = refs.service_refs(spec, diags);
    let (connections, by_ref) = refs.into_planned();
    let (vars, skipped) = variables(spec, opts, &connections, &by_ref, &accepted, mapped, diags);
    if !opts.control_plane {
        remote_without_control_plane(&connections, diags);
    }
    check_file_sources(&connections, diags);
    let files = files(spec, &loaded, &connections, &vars, opts, diags);
    Some(Plan {
        dir: dir.to_path_buf(),
        identity: me,
        connections,
        vars,
        skipped,
        warnings: Vec::new(),
        files,
        files_root: opts.files_root.clone(),
    })
}

/// The files of docs/files.md: `configurations.file` first, then the `kind: File` documents.
fn files(
    spec: &model::ComponentSpec,
    loaded: &config::Loaded,
    connections: &[PlannedConnection],
    vars: &[Binding],
    opts: &Options,
    diags: &mut Diagnostics,
) -> Vec<crate::fileplan::PlannedFile> {
    let specs: Vec<_> = spec.files.iter().chain(&loaded.files).cloned().collect();
    if specs.is_empty() {
        return Vec::new();
    }
    let referenced: Vec<&str> = spec.connection_refs.iter().map(|r| r.name.as_str()).collect();
    let connections: Vec<(&str, &model::Connection)> =
        connections.iter().map(|c| (c.name.as_str(), c.connection.as_ref())).collect();
    let vars: Vec<&str> = vars.iter().map(|b| b.var.as_str()).collect();
    crate::fileplan::build(&specs, &referenced, &connections, &vars, &opts.files_root, opts.ignore_unsupported, diags)
}

/// The references of `component.yaml`, matched to the descriptors this component may see.
struct References<'a> {
    me: &'a Identity,
    /// Appended to "no descriptor" errors when some descriptor failed to parse.
    hint: &'static str,
    /// The descriptors with errors, by what could be read of their name and id: a
    /// reference to one of them is explained above and not reported again.
    failed: &'a [config::validate::FailedDescriptor],
    /// Lookups by name and id, so that a directory of thousands of connections stays linear.
    by_name: HashMap<&'a str, Vec<&'a Arc<Connection>>>,
    by_id: HashMap<&'a str, &'a Arc<Connection>>,
    /// A connection used under one name is planned once: (id, name) -> index.
    planned: HashMap<(&'a str, &'a str), usize>,
    connections: Vec<PlannedConnection>,
    /// `connectionReferences` names -> index in `connections`.
    by_ref: HashMap<&'a str, usize>,
}

impl<'a> References<'a> {
    fn new(loaded: &'a config::Loaded, me: &'a Identity) -> Self {
        let n = loaded.connections.len();
        let mut by_name: HashMap<&str, Vec<&Arc<Connection>>> = HashMap::with_capacity(n);
        let mut by_id: HashMap<&str, &Arc<Connection>> = HashMap::with_capacity(n);
        for c in &loaded.connections {
            by_name.entry(c.name.as_str()).or_default().push(c);
            by_id.entry(c.id.as_str()).or_insert(c);
        }
        // At most one planned connection per reference: sized once, not grown by doubling.
        let refs = loaded.component.as_ref().map_or(0, |s| s.connection_refs.len() + s.service_refs.len());
        let hint =
            if loaded.had_descriptor_errors { " (a descriptor with errors above may be the one meant)" } else { "" };
        References {
            me,
            hint,
            failed: &loaded.failed,
            by_name,
            by_id,
            planned: HashMap::with_capacity(refs),
            connections: Vec::with_capacity(refs),
            by_ref: HashMap::with_capacity(refs),
        }
    }

    /// The planned connections and the references' indexes into them; the lookups are
    /// freed here, before the variables are made.
    fn into_planned(self) -> (Vec<PlannedConnection>, HashMap<&'a str, usize>) {
        (self.connections, self.by_ref)
    }

    fn add(&mut self, name: &'a str, kind: RefKind, c: &'a Arc<Connection>) -> usize {
        let connections = &mut self.connections;
        *self.planned.entry((c.id.as_str(), name)).or_insert_with(|| {
            connections.push(PlannedConnection { name: name.to_owned(), kind, connection: Arc::clone(c) });
            connections.len() - 1
        })
    }

    /// Plans every `connectionReferences` entry that names exactly one visible descriptor
    /// with a matching `resourceRef`; returns them with their index.
    fn connection_refs(&mut self, spec: &'a ComponentSpec, diags: &mut Diagnostics) -> Vec<(usize, &'a ConnectionRef)> {
        let mut accepted = Vec::new();
        for r in &spec.connection_refs {
            if self.by_ref.contains_key(r.name.as_str()) {
                diags.error(
                    r.origin.clone(),
                    format!("connection {:?} is referenced twice", r.name),
                    "remove the second entry from dependencies.connectionReferences",
                );
                continue;
            }
            let Some(c) = self.visible(r, diags) else { continue };
            if let Some(own) = &c.resource_ref {
                if own != &r.resource_ref {
                    diags.error(
                        r.origin.clone(),
                        format!(
                            "resourceRef mismatch for {:?}: component.yaml says {} but the descriptor at {} says {}",
                            r.name, r.resource_ref, c.origin, own
                        ),
                        "make the reference's resourceRef match the connection it points at",
                    );
                    continue;
                }
            }
            let i = self.add(&r.name, r.resource_ref.kind, c);
            self.by_ref.insert(&r.name, i);
            accepted.push((i, r));
        }
        accepted
    }

    /// The one descriptor named as `r` is that this component may see, or why there is none.
    fn visible(&self, r: &ConnectionRef, diags: &mut Diagnostics) -> Option<&'a Arc<Connection>> {
        let named: &[&Arc<Connection>] = self.by_name.get(r.name.as_str()).map_or(&[], Vec::as_slice);
        let visible: Vec<&Arc<Connection>> =
            named.iter().copied().filter(|c| invisible(c, self.me).is_none()).collect();
        match visible.as_slice() {
            [c] => Some(*c),
            [] => {
                match named.first() {
                    Some(c) => diags.error(
                        r.origin.clone(),
                        invisible(c, self.me).unwrap_or_default(),
                        format!(
                            "reference a connection of this component or a project connection of {:?}; the descriptor is at {}",
                            self.me.project, c.origin
                        ),
                    ),
                    // The descriptor meant has errors, reported at its own lines.
                    None if self.failed.iter().any(|f| f.name.as_deref() == Some(&r.name)) => {}
                    None => {
                        let failed = self.failed.iter().filter_map(|f| f.name.as_deref());
                        let names = self.by_name.keys().copied().chain(failed);
                        diags.error(
                            r.origin.clone(),
                            format!("no connection descriptor named {:?}{}{}", r.name, did_you_mean(&r.name, names), self.hint),
                            "add a `kind: Connection` document with that name to the directory, or correct the reference",
                        )
                    }
                }
                None
            }
            [a, b, ..] => {
                diags.error(
                    r.origin.clone(),
                    format!("two visible connections are named {:?}: at {} and at {}", r.name, a.origin, b.origin),
                    "rename one of them, or remove the copy",
                );
                None
            }
        }
    }

    /// Plans every legacy `serviceReferences` entry; returns the variables its `env`
    /// mappings name.
    fn service_refs(&mut self, spec: &ComponentSpec, diags: &mut Diagnostics) -> Vec<Binding> {
        let mut vars = Vec::new();
        for s in &spec.service_refs {
            let Some(&c) = self.by_id.get(s.connection_id.as_str()) else {
                if self.failed.iter().any(|f| f.id.as_deref() == Some(&s.connection_id)) {
                    continue;
                }
                diags.error(
                    s.origin.clone(),
                    format!(
                        "service reference {:?} names connection {}, which has no descriptor{}",
                        s.name, s.connection_id, self.hint
                    ),
                    "add a `kind: Connection` document with that id, or correct connectionConfig",
                );
                continue;
            };
            if let Some(why) = invisible(c, self.me) {
                diags.error(s.origin.clone(), why, format!("the descriptor is at {}", c.origin));
                continue;
            }
            let kind = c.resource_ref.as_ref().map_or(RefKind::Service, |r| r.kind);
            let i = self.add(&c.name, kind, c);
            for (from, to) in &s.env {
                if !c.has_key(from) {
                    diags.error(
                        s.origin.clone(),
                        format!(
                            "service reference {:?} maps {from}, which connection {:?} does not have{}",
                            s.name,
                            c.name,
                            did_you_mean(from, c.keys())
                        ),
                        format!("map one of: {}", keys_of(c)),
                    );
                    continue;
                }
                vars.push(Binding {
                    var: to.clone(),
                    target: Target::Param { conn: i, key: from.clone() },
                    origin: s.origin.clone(),
                });
            }
        }
        vars
    }
}

/// Every variable's name and target: the service references' mappings, then
/// `configurations.env`, then the default names of `connectionReferences` parameters
/// that no entry renamed. Sorted by name; invalid and doubled names are reported.
fn variables(
    spec: &ComponentSpec,
    opts: &Options,
    connections: &[PlannedConnection],
    by_ref: &HashMap<&str, usize>,
    accepted: &[(usize, &ConnectionRef)],
    mut vars: Vec<Binding>,
    diags: &mut Diagnostics,
) -> (Vec<Binding>, Vec<(String, &'static str)>) {
    // Sized once: on thousands of connections, growing by doubling copies every binding.
    let defaults: usize = accepted.iter().map(|&(i, _)| connections[i].connection.parameters.len()).sum();
    vars.reserve(spec.env.len() + defaults);
    // Parameters of connectionReferences that an entry renamed: no default name for them.
    let mut renamed: HashSet<(usize, &str)> = HashSet::new();
    let mut skipped = Vec::new();
    for e in &spec.env {
        match &e.value {
            ValueSource::Literal(v) => {
                vars.push(Binding { var: e.name.clone(), target: Target::Literal(v.clone()), origin: e.origin.clone() })
            }
            ValueSource::ConnectionRef { name, key } => {
                let Some(&i) = by_ref.get(name.as_str()) else {
                    // A reference that is listed but failed has its own error above:
                    // this entry is not wrong.
                    if spec.connection_refs.iter().any(|r| &r.name == name) {
                        continue;
                    }
                    // Only references that resolved: a listed one that failed (itself a
                    // typo) would point back at the mistake.
                    let listed = spec.connection_refs.iter().map(|r| r.name.as_str()).filter(|n| by_ref.contains_key(n));
                    diags.error(
                        e.origin.clone(),
                        format!("variable {} takes {key} from connection {name:?}, which is not in dependencies.connectionReferences{}", e.name, did_you_mean(name, listed)),
                        "add the connection to dependencies.connectionReferences, or correct the name",
                    );
                    continue;
                };
                let c = &connections[i].connection;
                if !c.has_key(key) {
                    diags.error(
                        e.origin.clone(),
                        format!(
                            "variable {} takes {key} from connection {name:?}, which has no such key{}",
                            e.name,
                            did_you_mean(key, c.keys())
                        ),
                        format!("use one of: {}", keys_of(c)),
                    );
                    continue;
                }
                // The rename replaces the default name.
                renamed.insert((i, key.as_str()));
                vars.push(Binding {
                    var: e.name.clone(),
                    target: Target::Param { conn: i, key: key.clone() },
                    origin: e.origin.clone(),
                });
            }
            ValueSource::Unsupported(what) if opts.ignore_unsupported => skipped.push((e.name.clone(), *what)),
            ValueSource::Unsupported(what) => diags.error(
                e.origin.clone(),
                format!("variable {} comes from {what}, which connd cannot serve", e.name),
                "give the value in the platform's configuration, or pass --ignore-unsupported to leave the variable out",
            ),
        }
    }
    default_bindings(&opts.env_prefix, connections, accepted, &renamed, &mut vars);
    check_names(&mut vars, connections, diags);
    (vars, skipped)
}

/// Pushes the default names of the parameters not `renamed`, by connection and key (a
/// connection accepted twice is named by its last reference).
fn default_bindings(
    prefix: &str,
    connections: &[PlannedConnection],
    accepted: &[(usize, &ConnectionRef)],
    renamed: &HashSet<(usize, &str)>,
    vars: &mut Vec<Binding>,
) {
    let mut accepted = accepted.to_vec();
    accepted.reverse();
    accepted.sort_by_key(|&(i, _)| i);
    accepted.dedup_by_key(|&mut (i, _)| i);
    for (i, r) in accepted {
        for key in connections[i].connection.parameters.keys().filter(|k| !renamed.contains(&(i, k.as_str()))) {
            vars.push(Binding {
                var: default_var_name(prefix, &r.name, key),
                target: Target::Param { conn: i, key: key.clone() },
                origin: r.origin.clone(),
            });
        }
    }
}

/// Reports names no environment can hold and names with two sources; sorts by name.
fn check_names(vars: &mut [Binding], connections: &[PlannedConnection], diags: &mut Diagnostics) {
    for b in vars.iter() {
        if !valid_env_name(&b.var) {
            diags.error(
                b.origin.clone(),
                format!("the variable name {:?} is not valid in an environment", b.var),
                "rename the reference or set --env-prefix so the name starts with a letter",
            );
        }
    }
    sort_by_name(vars);
    for pair in vars.windows(2) {
        if pair[0].var == pair[1].var {
            let describe = |b: &Binding| match &b.target {
                Target::Literal(_) => format!("a literal value at {}", b.origin),
                Target::Param { conn, key } => format!("{key} of {:?} ({})", connections[*conn].name, b.origin),
            };
            diags.error(
                pair[1].origin.clone(),
                format!("variable {} has two sources: {} and {}", pair[0].var, describe(&pair[0]), describe(&pair[1])),
                "rename one of them in configurations.env, or drop one mapping",
            );
        }
    }
}

/// Sorts `vars` by name, keeping the order of equal names (the second is the one
/// reported). Positions are sorted, then the bindings moved once into place: a stable
/// sort of the bindings themselves takes a scratch copy of them all (4.8 MB on 50,000).
fn sort_by_name(vars: &mut [Binding]) {
    let mut order: Vec<usize> = (0..vars.len()).collect();
    order.sort_by(|&a, &b| vars[a].var.cmp(&vars[b].var));
    // Position `j` takes the binding now at `order[j]`: follow each cycle, swapping.
    for start in 0..vars.len() {
        let mut j = start;
        loop {
            let k = order[j];
            order[j] = j;
            if k == start {
                break;
            }
            vars.swap(j, k);
            j = k;
        }
    }
}

/// Without a control plane, a `remote: true` parameter of a planned connection can never
/// have a value.
fn remote_without_control_plane(connections: &[PlannedConnection], diags: &mut Diagnostics) {
    for p in connections {
        for key in p.connection.control_plane_keys() {
            diags.error(
                p.connection.origin.clone(),
                format!("parameter {key} of connection {:?} is `remote: true`, which needs a control plane", p.name),
                "pass --control-plane URL (or CONND_CONTROL_PLANE), or give the value locally with `value:` or `file:`",
            );
        }
    }
}

/// Reads every `file:` source of the planned connections, so that a missing or
/// unreadable one is reported with every other problem, at its parameter's line.
fn check_file_sources(connections: &[PlannedConnection], diags: &mut Diagnostics) {
    // Each file once (many connections often share one mounted key); each parameter
    // that reads a bad one reported once, at its own line.
    let mut read: HashMap<&Path, Result<(), (String, &'static str)>> = HashMap::new();
    let mut reported = std::collections::HashSet::new();
    for p in connections {
        for (key, param) in &p.connection.parameters {
            let Some(path) = param.source.file() else { continue };
            let result = read.entry(path).or_insert_with(|| config::files::read_value_file_or_fix(path).map(drop));
            if let Err((cause, fix)) = result {
                if !reported.insert(&param.origin) {
                    continue;
                }
                diags.error(
                    param.origin.clone(),
                    format!("cannot read {key} of connection {:?} from {}: {cause}", p.connection.name, path.display()),
                    *fix,
                );
            }
        }
    }
}

/// The keys `c` offers, for a message.
fn keys_of(c: &Connection) -> String {
    c.keys().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(default_var_name("CHOREO", "hr-connection", "ServiceURL"), "CHOREO_HR_CONNECTION_SERVICEURL");
        assert_eq!(default_var_name("", "hr connection", "ServiceURL"), "HR_CONNECTION_SERVICEURL");
        assert_eq!(default_var_name("my-app", "--a..b--", "Key_1"), "MY_APP_A_B_KEY_1");
        assert_eq!(default_var_name("x", "émoji ünits", "k"), "X_MOJI_NITS_K");
        assert_eq!(default_var_name("", "", "k"), "K");
        assert_eq!(default_var_name("--", "a", "--"), "A");
    }

    #[test]
    fn sorted_by_name_as_a_stable_sort() {
        let binding = |var: String, line| Binding {
            var,
            target: Target::Literal(String::new()),
            origin: Origin::at("component.yaml", line),
        };
        // Few names, many repeats, in a scrambled order: every cycle shape is met.
        let mut seed = 7u64;
        let vars: Vec<Binding> = (0..2000)
            .map(|line| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                binding(format!("V{}", (seed >> 33) % 37), line)
            })
            .collect();
        let key = |vars: &[Binding]| vars.iter().map(|b| (b.var.clone(), b.origin.line)).collect::<Vec<_>>();
        let mut expected = vars.clone();
        expected.sort_by(|a, b| a.var.cmp(&b.var));
        let mut got = vars;
        sort_by_name(&mut got);
        assert_eq!(key(&got), key(&expected));
        sort_by_name(&mut []);
    }
}

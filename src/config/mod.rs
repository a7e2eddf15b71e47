//! The connection-config directory: reading it (`files`), the YAML as written (`raw`,
//! whose values keep their text: `scalar`; read from yaml-rust2's `events` where that
//! reads as serde_yaml_ng does, else by serde_yaml_ng), the checks (`validate`; `suggest` offers the
//! nearest known name, here and in `resolve`) and the validated model (`model`). `load`
//! runs them all and collects every problem into one set of diagnostics (`diag`).

pub mod diag;
pub mod events;
pub mod files;
pub mod filespec;
pub mod model;
pub mod oauth;
pub mod raw;
pub mod scalar;
pub mod suggest;
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
    /// `kind: File` documents (docs/files.md).
    pub files: Vec<model::FileSpec>,
    /// Some descriptor failed to parse, so a missing reference may be explained above.
    pub had_descriptor_errors: bool,
    /// The descriptors that failed, by what could be read of their name and id: a
    /// reference to one of them is explained above and is not reported again.
    pub failed: Vec<validate::FailedDescriptor>,
    /// Whether any file was read: when none was, the directory's error says it all.
    pub read_any: bool,
    /// A `kind: Component` document had errors, reported above.
    pub failed_identity: bool,
}

/// Reads and checks every file of `dir`.
pub fn load(dir: &Path, diags: &mut Diagnostics) -> Loaded {
    let before = diags.len();
    let files = files::read_dir(dir, diags);
    // A file that could not be read (not UTF-8, a dangling link) may hold the identity or
    // a descriptor: what is missing because of it is not reported a second time.
    let unread = diags.len() > before;
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
        docs.files.extend(part.docs.files);
        docs.had_errors |= part.docs.had_errors;
        docs.failed.extend(part.docs.failed);
        docs.failed_identity |= part.docs.failed_identity;
        diags.extend(part.diags);
    }
    loaded.read_any = !files.is_empty();
    if !saw_component && !files.iter().any(files::misnamed_component) && !files.is_empty() {
        diags.error(
            Origin::file(dir.join(files::COMPONENT_FILE)),
            "the config directory has no component.yaml",
            "add the component's component.yaml (the platform's .choreo/component.yaml) to the directory",
        );
    }
    let mut seen: foldhash::HashMap<&str, &Arc<Connection>> =
        foldhash::HashMapExt::with_capacity(docs.connections.len());
    for c in &docs.connections {
        if let Some(first) = seen.insert(&c.id, c) {
            diags.error(
                c.origin.clone(),
                format!("duplicate connection id {} (also used by {:?} at {})", c.id, first.name, first.origin),
                "every connection needs its own UUID: remove the copy or correct the id",
            );
        }
    }
    proxy_ports_unique(&docs.connections, diags);
    loaded.identities = docs.identities;
    loaded.connections = docs.connections;
    loaded.files = docs.files;
    loaded.had_descriptor_errors = docs.had_errors || unread;
    loaded.failed = docs.failed;
    loaded.failed_identity = docs.failed_identity || unread;
    loaded
}

/// Every `proxy.port` is one connection's: two listeners cannot share a port, and which
/// connection a shared one meant cannot be guessed (docs/proxy.md). Checked over every
/// descriptor of the directory, referenced or not, as ids are.
fn proxy_ports_unique(connections: &[Arc<Connection>], diags: &mut Diagnostics) {
    let mut seen: HashMap<u16, &Connection> = HashMap::new();
    for c in connections {
        let Some(own) = &c.proxy_port else { continue };
        let first = match seen.entry(own.port) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(c);
                continue;
            }
            std::collections::hash_map::Entry::Occupied(first) => *first.get(),
        };
        let first_at = first.proxy_port.as_ref().map_or(&first.origin, |p| &p.origin);
        diags.error(
            own.origin.clone(),
            format!(
                "proxy port {} is claimed by two connections: {:?} (at {first_at}) and {:?} (here)",
                own.port, first.name, c.name
            ),
            "give each connection its own `proxy.port`, or remove it from one of them",
        );
    }
    for c in connections {
        let Some(target) = c.parameters.get("ServiceURL").and_then(|p| loopback_port(&p.source)) else { continue };
        let Some(owner) = seen.get(&target) else { continue };
        let at = owner.proxy_port.as_ref().map_or(&owner.origin, |p| &p.origin);
        let param = &c.parameters["ServiceURL"];
        diags.error(
            param.origin.clone(),
            format!(
                "the ServiceURL of connection {:?} is port {target} of this machine, the proxy port of connection \
                 {:?} (at {at}): connd would forward its requests to itself",
                c.name, owner.name
            ),
            "set the ServiceURL to the real upstream (the service connd's port forwards to), or give the port another number",
        );
    }
}

/// The port of a literal `ServiceURL` whose host is connd's own ports' address
/// (`localhost`, `127.0.0.1`, `0.0.0.0`, or those mapped in IPv6), its scheme's default when none is written; `None` for any other URL, or a
/// value not known before resolution (a file, the control plane).
fn loopback_port(source: &model::Source) -> Option<u16> {
    let text = match source {
        model::Source::Value(v) => v.expose(),
        model::Source::File(_) | model::Source::ControlPlane => return None,
    };
    let uri: http::Uri = text.trim().parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    // What reaches a port connd binds on 127.0.0.1 alone: not `[::1]` or `127.0.0.2`,
    // where another process may listen on the same port.
    let v4 = |ip: std::net::IpAddr| {
        ip.to_canonical() == std::net::Ipv4Addr::LOCALHOST || ip.to_canonical() == std::net::Ipv4Addr::UNSPECIFIED
    };
    let local = host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(v4);
    if !local {
        return None;
    }
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

/// What one run of the parser over some documents found.
#[derive(Default)]
struct Parsed {
    /// `Some` when the run held component.yaml (inner `None`: it was invalid).
    component: Option<Option<ComponentSpec>>,
    docs: validate::Documents,
    diags: Diagnostics,
}

/// One piece of parsing work: component.yaml whole, or one document of another file.
enum Unit<'a> {
    Component(&'a files::SourceFile),
    /// `component.yml` or a near name: the platform's name is `component.yaml`.
    MisnamedComponent(&'a files::SourceFile),
    Document(&'a files::SourceFile, files::Document<'a>),
}

impl Unit<'_> {
    /// The unit's share of the work, in bytes of YAML.
    fn bytes(&self) -> usize {
        match self {
            Unit::Component(f) | Unit::MisnamedComponent(f) => f.text.len(),
            Unit::Document(_, d) => d.text.len(),
        }
    }
}

fn parse_units(units: &[Unit<'_>]) -> Parsed {
    let mut out = Parsed::default();
    // The path of the file being read, one copy shared by the origins of its documents.
    let mut path: Option<(&Path, Arc<Path>)> = None;
    for unit in units {
        match unit {
            Unit::Component(file) => out.component = Some(validate::component_yaml(file, &mut out.diags)),
            Unit::Document(file, doc) => {
                let shared = match &path {
                    Some((of, shared)) if *of == file.path.as_path() => shared,
                    _ => &path.insert((&file.path, Arc::from(file.path.as_path()))).1,
                };
                validate::connd_document(shared, doc, &mut out.docs, &mut out.diags)
            }
            Unit::MisnamedComponent(file) => out.diags.error(
                Origin::file(&file.path),
                format!("connd reads the component's config from component.yaml, not {}", file.name),
                "rename the file to component.yaml (the name the platform gives .choreo/component.yaml)",
            ),
        }
    }
    out
}

/// Below this much YAML a second thread costs more than it saves (its start and its own
/// malloc arena): measured, 50 connections (26 KiB) exec 0.35 ms faster on one thread,
/// 10,000 connections (4 MiB) check 50 ms faster on two.
const PARALLEL_BYTES: usize = 256 * 1024;

/// Parses every document on every core, in contiguous runs of about equal size; the
/// results come back in file and document order, so diagnostics read the same however
/// the work was split. Documents, not files, are the unit: one large file splits too.
fn parse_parallel(files: &[files::SourceFile]) -> Vec<Parsed> {
    let units: Vec<Unit<'_>> = files
        .iter()
        .flat_map(|f| -> Vec<Unit<'_>> {
            if f.name == files::COMPONENT_FILE {
                vec![Unit::Component(f)]
            } else if files::misnamed_component(f) {
                vec![Unit::MisnamedComponent(f)]
            } else {
                files::documents(&f.text).into_iter().map(|d| Unit::Document(f, d)).collect()
            }
        })
        .collect();
    let total: usize = units.iter().map(Unit::bytes).sum();
    // Below the threshold the cores are not asked: musl and std find them by reading
    // /proc/self/cgroup and the CPU quota's files, three opens on every start.
    if total < PARALLEL_BYTES {
        return vec![parse_units(&units)];
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(units.len());
    if workers < 2 {
        return vec![parse_units(&units)];
    }
    let mut chunks = Vec::with_capacity(workers);
    let (mut start, mut bytes) = (0, 0);
    for (i, u) in units.iter().enumerate() {
        bytes += u.bytes();
        if bytes * workers >= total * (chunks.len() + 1) && chunks.len() + 1 < workers {
            chunks.push(&units[start..=i]);
            start = i + 1;
        }
    }
    chunks.push(&units[start..]);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks[1..].iter().map(|chunk| scope.spawn(|| parse_units(chunk))).collect();
        let mut parts = vec![parse_units(chunks[0])];
        parts.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))));
        parts
    })
}

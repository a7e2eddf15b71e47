//! The `connd.dev/*` annotations of a pod template (docs/kubernetes.md), read and checked
//! into a [`Request`]: every problem is collected, each naming the annotation and the fix.
//!
//! Boundary: annotations only; whether the pod's containers and volumes allow the
//! request is `pod`'s to check.

use super::Problem;
use serde_yaml::{Mapping, Value};

/// The annotations a pod template opts in with (docs/kubernetes.md has their meaning).
pub const INJECT: &str = "connd.dev/inject";
pub const CONFIG: &str = "connd.dev/config";
pub const SECRETS: &str = "connd.dev/secrets";
pub const MODE: &str = "connd.dev/mode";
pub const CONTAINERS: &str = "connd.dev/containers";
pub const PROXY_PORT: &str = "connd.dev/proxy-port";
pub const FILES_ROOT: &str = "connd.dev/files-root";
pub const CONTROL_PLANE: &str = "connd.dev/control-plane";
pub const TOKEN_AUDIENCE: &str = "connd.dev/token-audience";
/// Set by connd on the templates it injected: `injected`.
pub const STATUS: &str = "connd.dev/status";
/// The value of [`STATUS`] on an injected template.
pub const INJECTED: &str = "injected";

/// Every annotation connd reads or writes; another `connd.dev/` name is a typo.
pub const KNOWN: [&str; 10] =
    [INJECT, CONFIG, SECRETS, MODE, CONTAINERS, PROXY_PORT, FILES_ROOT, CONTROL_PLANE, TOKEN_AUDIENCE, STATUS];

/// How the workload gets its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A native sidecar runs `connd serve`; the chosen containers use its socket.
    Sidecar,
    /// An init container copies connd in; the chosen containers start under `connd exec`.
    Entrypoint,
    /// An init container runs `connd render` into the files volume.
    Render,
}

/// What a template that opted in asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub mode: Mode,
    /// The ConfigMap holding the connection-config directory.
    pub config: String,
    /// Secrets projected into the same directory.
    pub secrets: Vec<String>,
    /// The containers that get the values; `None`: all of `containers`.
    pub containers: Option<Vec<String>>,
    /// Sidecar mode: the egress proxy's port on the pod's loopback.
    pub proxy_port: Option<u16>,
    /// Where the files land in the chosen containers (absolute).
    pub files_root: Option<String>,
    pub control_plane: Option<String>,
    /// The audience of the projected ServiceAccount token given as `--token-file`.
    pub token_audience: Option<String>,
}

/// What the annotations say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptIn {
    /// No `connd.dev/inject: "true"`: untouched.
    Out,
    /// Already marked `connd.dev/status: injected`: untouched, so injecting again changes nothing.
    Injected,
    In(Request),
}

/// Reads the template's annotations (`metadata.annotations`, absent for none).
pub fn read(annotations: Option<&Mapping>) -> Result<OptIn, Vec<Problem>> {
    let empty = Mapping::new();
    let annotations = annotations.unwrap_or(&empty);
    let mut problems = Vec::new();
    let mut get = |name: &str| -> Option<String> {
        match annotations.get(name)? {
            Value::String(s) => Some(s.clone()),
            other => {
                problems.push(Problem::annotation(
                    name,
                    format!("the value is {}, not a string", kind_of(other)),
                    format!("quote it: {name}: \"{}\"", plain(other)),
                ));
                None
            }
        }
    };
    let inject = get(INJECT);
    let status = get(STATUS);
    if inject.as_deref() != Some("true") {
        return if problems.is_empty() { Ok(OptIn::Out) } else { Err(problems) };
    }
    if status.as_deref() == Some(INJECTED) {
        return Ok(OptIn::Injected);
    }
    let fields = (
        get(CONFIG),
        get(SECRETS),
        get(MODE),
        get(CONTAINERS),
        get(PROXY_PORT),
        get(FILES_ROOT),
        get(CONTROL_PLANE),
        get(TOKEN_AUDIENCE),
    );
    unknown_names(annotations, &mut problems);
    let request = check(fields, &mut problems);
    match request {
        Some(r) if problems.is_empty() => Ok(OptIn::In(r)),
        _ => Err(problems),
    }
}

type Fields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Checks each value; `None` when one is unusable (its problem pushed).
fn check(fields: Fields, problems: &mut Vec<Problem>) -> Option<Request> {
    let (config, secrets, mode, containers, proxy_port, files_root, control_plane, token_audience) = fields;
    let mode = match mode.as_deref().map(str::trim) {
        None | Some("sidecar") => Mode::Sidecar,
        Some("entrypoint") => Mode::Entrypoint,
        Some("render") => Mode::Render,
        Some(other) => {
            problems.push(Problem::annotation(
                MODE,
                format!("unknown mode {other:?}"),
                "write sidecar (the default), entrypoint or render",
            ));
            Mode::Sidecar
        }
    };
    let config = match config.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => {
            check_name(CONFIG, name, problems);
            name.to_owned()
        }
        _ => {
            problems.push(Problem::annotation(
                CONFIG,
                "missing: connd needs the ConfigMap that holds its connection-config directory",
                format!("add {CONFIG}: <name of the ConfigMap with component.yaml>"),
            ));
            String::new()
        }
    };
    let secrets = list(SECRETS, secrets.as_deref(), problems);
    let containers = containers.map(|c| list(CONTAINERS, Some(&c), problems));
    let proxy_port = proxy_port.and_then(|p| port(&p, mode, problems));
    let files_root = files_root.and_then(|f| root(&f, problems));
    if mode == Mode::Render && files_root.is_none() && !problems.iter().any(|p| p.at.ends_with(FILES_ROOT)) {
        problems.push(Problem::annotation(
            FILES_ROOT,
            "missing: render mode writes files, and needs the folder they appear in",
            format!("add {FILES_ROOT}: /etc/app (the folder the containers read the files from)"),
        ));
    }
    let control_plane = control_plane.map(|u| u.trim().to_owned());
    if let Some(url) = &control_plane {
        let ok = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some_and(|h| !h.is_empty()));
        if !ok {
            problems.push(Problem::annotation(
                CONTROL_PLANE,
                format!("{url:?} is not an http(s) URL"),
                "give the control plane's base URL, e.g. https://connections.example.internal",
            ));
        }
    }
    let token_audience = token_audience.map(|a| a.trim().to_owned());
    if token_audience.as_deref() == Some("") {
        problems.push(Problem::annotation(TOKEN_AUDIENCE, "empty", "give the audience the control plane accepts"));
    }
    if token_audience.is_some() && control_plane.is_none() {
        problems.push(Problem::annotation(
            TOKEN_AUDIENCE,
            "a token is only sent to a control plane, and none is given",
            format!("add {CONTROL_PLANE}: <URL>, or remove {TOKEN_AUDIENCE}"),
        ));
    }
    Some(Request { mode, config, secrets, containers, proxy_port, files_root, control_plane, token_audience })
}

/// `a,b` (spaces allowed around names), each a Kubernetes object name.
fn list(annotation: &str, text: Option<&str>, problems: &mut Vec<Problem>) -> Vec<String> {
    let names: Vec<String> =
        text.unwrap_or("").split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    if text.is_some() && names.is_empty() {
        problems.push(Problem::annotation(annotation, "empty", "list names separated by commas, or remove it"));
    }
    for name in &names {
        check_name(annotation, name, problems);
    }
    names
}

/// A DNS-1123 name, as ConfigMaps, Secrets and containers have.
fn check_name(annotation: &str, name: &str, problems: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        problems.push(Problem::annotation(
            annotation,
            format!("{name:?} is not a Kubernetes name"),
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ));
    }
}

fn port(text: &str, mode: Mode, problems: &mut Vec<Problem>) -> Option<u16> {
    let port = match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            problems.push(Problem::annotation(
                PROXY_PORT,
                format!("{text:?} is not a port number"),
                "give a number from 1 to 65535, e.g. \"15000\"",
            ));
            return None;
        }
    };
    match mode {
        Mode::Sidecar => Some(port),
        Mode::Entrypoint | Mode::Render => {
            problems.push(Problem::annotation(
                PROXY_PORT,
                "the egress proxy runs in sidecar mode only",
                format!("remove {PROXY_PORT}, or use {MODE}: sidecar"),
            ));
            None
        }
    }
}

/// Folders connd's own mounts use in the chosen containers; files may not land there.
const RESERVED: [&str; 4] = ["/run/connd", "/connd/bin", "/etc/connd", "/var/run/secrets/connd"];

fn root(text: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let path = text.trim().trim_end_matches('/');
    let bad = if !text.trim().starts_with('/') {
        Some("is not an absolute path")
    } else if path.is_empty() {
        Some("is the root folder, which cannot be a mount")
    } else if path.split('/').any(|part| part == ".." || part == ".") {
        Some("holds `.` or `..`")
    } else if RESERVED.contains(&path) {
        Some("is a folder connd mounts its own volume at")
    } else {
        None
    };
    match bad {
        Some(why) => {
            problems.push(Problem::annotation(
                FILES_ROOT,
                format!("{text:?} {why}"),
                "give the absolute folder the containers read the files from, e.g. /etc/app",
            ));
            None
        }
        None => Some(path.to_owned()),
    }
}

/// A `connd.dev/` annotation connd does not know: a typo, named with the likely one.
fn unknown_names(annotations: &Mapping, problems: &mut Vec<Problem>) {
    for key in annotations.keys().filter_map(Value::as_str) {
        if key.starts_with("connd.dev/") && !KNOWN.contains(&key) {
            let meant = KNOWN.iter().min_by_key(|k| strsim::osa_distance(key, k)).copied().unwrap_or(INJECT);
            problems.push(Problem::annotation(
                key,
                "not an annotation connd knows",
                format!("did you mean {meant}? (known: {})", KNOWN.join(", ")),
            ));
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => "...".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Mapping {
        pairs.iter().map(|(k, v)| (Value::from(*k), Value::from(*v))).collect()
    }

    #[test]
    fn opt_in_needs_exactly_true() {
        assert_eq!(read(None), Ok(OptIn::Out));
        assert_eq!(read(Some(&annotations(&[(INJECT, "yes"), (CONFIG, "c")]))), Ok(OptIn::Out));
        let done = annotations(&[(INJECT, "true"), (STATUS, INJECTED)]);
        assert_eq!(read(Some(&done)), Ok(OptIn::Injected));
    }

    #[test]
    fn every_problem_is_reported_with_its_annotation() {
        let bad = annotations(&[
            (INJECT, "true"),
            (MODE, "sidecars"),
            (PROXY_PORT, "http"),
            ("connd.dev/secret", "a"),
            (FILES_ROOT, "etc/app"),
        ]);
        let problems = read(Some(&bad)).unwrap_err();
        let at: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "annotation connd.dev/secret",
                "annotation connd.dev/mode",
                "annotation connd.dev/config",
                "annotation connd.dev/proxy-port",
                "annotation connd.dev/files-root"
            ]
        );
        assert!(problems[0].fix.contains("did you mean connd.dev/secrets?"), "{problems:?}");
    }

    #[test]
    fn a_number_where_a_string_belongs_says_quote_it() {
        let mut m = annotations(&[(INJECT, "true"), (CONFIG, "c")]);
        m.insert(Value::from(PROXY_PORT), Value::from(15000));
        let problems = read(Some(&m)).unwrap_err();
        assert_eq!(problems[0].fix, "quote it: connd.dev/proxy-port: \"15000\"");
    }
}

//! The transformation (docs/kubernetes.md): a pod template (`metadata` + `spec`, as a
//! Pod or a workload's `spec.template` holds them) and its `connd.dev/*` annotations in,
//! the template with connd added out. `connd inject` and the webhook both call
//! [`inject`], so they agree by construction.
//!
//! The template stays a `serde_yaml::Value`: fields connd does not know (newer API
//! fields, extensions) pass through untouched, and a manifest's key order is kept.
//! Refusals name the container, volume or annotation and the fix; nothing is changed
//! unless everything checks out.
//!
//! Boundary: one template; finding templates in objects is `manifest`'s and `webhook`'s.

use super::annotations::{self, Mode, OptIn, Request};
use super::{InjectError, Object, Problem, Settings};
use serde_json::json;
use serde_yaml::{Mapping, Value};

/// connd's user and group in its image (distroless `nonroot`); also the pod's `fsGroup`
/// when the pod sets none, so the socket and files are reachable by the chosen containers.
pub const CONND_UID: u64 = 65532;

const SOCKET_DIR: &str = "/run/connd";
const SOCKET: &str = "/run/connd/connd.sock";
const CONFIG_DIR: &str = "/etc/connd";
const TOKEN_DIR: &str = "/var/run/secrets/connd";
const TOKEN_FILE: &str = "/var/run/secrets/connd/token";
/// connd's `--files-root` inside its own containers.
const FILES_DIR: &str = "/run/connd-files";
const BIN_DIR: &str = "/connd/bin";
const BIN: &str = "/connd/bin/connd";

/// The container names connd adds: a pod that already has one of them is refused.
pub const CONTAINER_NAMES: [&str; 3] = ["connd", "connd-install", "connd-render"];
/// The volume names connd adds: a pod that already has one of them is refused.
pub const VOLUME_NAMES: [&str; 5] = ["connd-socket", "connd-files", "connd-config", "connd-token", "connd-bin"];

/// What happened to a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not opted in, or already injected: unchanged.
    Unchanged,
    /// The new template.
    Injected(Value),
}

/// Injects connd into `template` (a mapping with `metadata` and `spec`; a whole Pod
/// object works too: other keys are kept) as its annotations ask, and returns the new
/// template. `object` names it in errors. Taken by value: the callers' copy is theirs to
/// keep or not (the webhook's is a conversion, made for this), and no tree is cloned.
pub fn inject(template: Value, object: &Object, settings: &Settings) -> Result<Outcome, InjectError> {
    let fail = |problems| InjectError { object: object.clone(), problems };
    let annotations = template.get("metadata").and_then(|m| m.get("annotations"));
    let annotations = match annotations {
        None | Some(Value::Null) => None,
        Some(Value::Mapping(m)) => Some(m),
        Some(_) => {
            let p =
                Problem::new("metadata.annotations", "not a mapping", "write annotations as `name: \"value\"` pairs");
            return Err(fail(vec![p]));
        }
    };
    let request = match annotations::read(annotations).map_err(fail)? {
        OptIn::Out | OptIn::Injected => return Ok(Outcome::Unchanged),
        OptIn::In(r) => r,
    };
    let mut out = template;
    let spec = match out.get_mut("spec") {
        Some(Value::Mapping(spec)) => spec,
        _ => return Err(fail(vec![Problem::new("spec", "missing", "give the pod template a spec with containers")])),
    };
    let chosen = check(spec, &request).map_err(fail)?;
    add(spec, &request, &chosen, settings);
    mark(&mut out);
    Ok(Outcome::Injected(out))
}

/// Positions in `containers` of the containers that get the values, once nothing in the
/// pod is in the way of what connd adds.
fn check(spec: &Mapping, request: &Request) -> Result<Vec<usize>, Vec<Problem>> {
    let mut problems = Vec::new();
    let containers = seq(spec, "containers");
    let names: Vec<&str> = containers.iter().map(|c| c.get("name").and_then(Value::as_str).unwrap_or("")).collect();
    if containers.is_empty() {
        problems.push(Problem::new("spec.containers", "empty", "give the pod at least one container"));
    }
    let chosen: Vec<usize> = match &request.containers {
        None => (0..containers.len()).collect(),
        Some(wanted) => {
            for w in wanted.iter().filter(|w| !names.contains(&w.as_str())) {
                problems.push(Problem::annotation(
                    annotations::CONTAINERS,
                    format!("no container named {w:?} in spec.containers"),
                    format!("name containers of this pod: {}", names.join(", ")),
                ));
            }
            (0..containers.len()).filter(|i| wanted.iter().any(|w| w == names[*i])).collect()
        }
    };
    for field in ["containers", "initContainers", "volumes"] {
        if spec.get(field).is_some_and(|v| !v.is_null() && !v.is_sequence()) {
            problems.push(Problem::new(format!("spec.{field}"), "not a list", format!("write {field} as a list")));
        }
    }
    for field in ["containers", "initContainers"] {
        for c in seq(spec, field) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if CONTAINER_NAMES.contains(&name) {
                problems.push(Problem::new(
                    format!("container {name}"),
                    format!("{field} already has a container named {name}, which connd adds"),
                    "rename that container, or remove the connd.dev/inject annotation if connd is already added by hand",
                ));
            }
        }
    }
    for v in seq(spec, "volumes") {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if VOLUME_NAMES.contains(&name) {
            problems.push(Problem::new(
                format!("volume {name}"),
                format!("the pod already has a volume named {name}, which connd adds"),
                "rename that volume, or remove the connd.dev/inject annotation if connd is already added by hand",
            ));
        }
    }
    for &i in &chosen {
        check_container(spec, &containers[i], names[i], request, &mut problems);
    }
    if problems.is_empty() {
        Ok(chosen)
    } else {
        Err(problems)
    }
}

/// What one chosen container must allow: a `command` to wrap, free mount paths and
/// variables, a known uid for the socket.
fn check_container(spec: &Mapping, c: &Value, name: &str, request: &Request, problems: &mut Vec<Problem>) {
    let at = format!("container {name}");
    let mounts = mounts_for(request);
    for m in c.get("volumeMounts").and_then(Value::as_sequence).into_iter().flatten() {
        let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("").trim_end_matches('/');
        if let Some((_, taken)) = mounts.iter().find(|(_, p)| *p == path) {
            problems.push(Problem::new(
                &at,
                format!("already mounts a volume at {taken}, where connd mounts its own"),
                match request.files_root.as_deref() == Some(*taken) {
                    true => format!("choose another {} or move that mount", annotations::FILES_ROOT),
                    false => format!("move that mount: connd needs {taken}"),
                },
            ));
        }
    }
    for var in env_for(request) {
        let set = c.get("env").and_then(Value::as_sequence).into_iter().flatten();
        if set.filter_map(|e| e.get("name").and_then(Value::as_str)).any(|n| n == var) {
            problems.push(Problem::new(&at, format!("already sets {var}, which connd sets"), format!("remove {var}")));
        }
    }
    match request.mode {
        Mode::Entrypoint => {
            if c.get("command").and_then(Value::as_sequence).map_or(true, Vec::is_empty) {
                problems.push(Problem::new(
                    &at,
                    "has no command, and entrypoint mode wraps it (the image's ENTRYPOINT cannot be known here)",
                    "give the container its command (the image's ENTRYPOINT) in `command:`, or use connd.dev/mode: sidecar",
                ));
            }
        }
        Mode::Sidecar => {
            if run_as_user(spec, c).is_none() {
                problems.push(Problem::new(
                    &at,
                    "has no runAsUser, and connd's socket lets in only the uids it is told",
                    "set securityContext.runAsUser on the container or the pod (the uid the image runs as)",
                ));
            }
        }
        Mode::Render => {}
    }
}

/// The mount paths connd adds to a chosen container, with their volumes.
fn mounts_for(request: &Request) -> Vec<(&'static str, &str)> {
    let mut mounts = Vec::new();
    match request.mode {
        Mode::Sidecar => mounts.push(("connd-socket", SOCKET_DIR)),
        Mode::Entrypoint => {
            mounts.push(("connd-bin", BIN_DIR));
            mounts.push(("connd-config", CONFIG_DIR));
            if request.token_audience.is_some() {
                mounts.push(("connd-token", TOKEN_DIR));
            }
        }
        Mode::Render => {}
    }
    if let Some(root) = &request.files_root {
        mounts.push(("connd-files", root.as_str()));
    }
    mounts
}

/// The variables connd sets on a chosen container.
fn env_for(request: &Request) -> Vec<&'static str> {
    match request.mode {
        Mode::Sidecar => vec!["CONND_SOCKET"],
        Mode::Entrypoint => {
            let mut vars = Vec::new();
            request.control_plane.is_some().then(|| vars.push("CONND_CONTROL_PLANE"));
            request.token_audience.is_some().then(|| vars.push("CONND_TOKEN_FILE"));
            request.files_root.is_some().then(|| vars.push("CONND_FILES_ROOT"));
            vars
        }
        Mode::Render => vec![],
    }
}

/// The container's uid: its own `runAsUser`, else the pod's.
fn run_as_user(spec: &Mapping, c: &Value) -> Option<u64> {
    let own = c.get("securityContext").and_then(|s| s.get("runAsUser")).and_then(Value::as_u64);
    own.or_else(|| spec.get("securityContext").and_then(|s| s.get("runAsUser")).and_then(Value::as_u64))
}

/// Adds connd's containers, volumes and mounts; `check` has passed.
fn add(spec: &mut Mapping, request: &Request, chosen: &[usize], settings: &Settings) {
    let uids = allowed_uids(spec, chosen);
    let connd = match request.mode {
        Mode::Sidecar => sidecar(request, &uids, &settings.image),
        Mode::Entrypoint => install(&settings.image),
        Mode::Render => render(request, &settings.image),
    };
    if let Some(init) = seq_mut(spec, "initContainers") {
        init.insert(0, connd);
    }
    let needs_group = request.mode == Mode::Sidecar || request.files_root.is_some() || request.token_audience.is_some();
    if needs_group {
        set_fs_group(spec);
    }
    if let Some(v) = seq_mut(spec, "volumes") {
        v.extend(volumes(request));
    }
    let containers = seq_mut(spec, "containers").map_or(&mut [][..], Vec::as_mut_slice);
    for (i, c) in containers.iter_mut().enumerate() {
        if !chosen.contains(&i) {
            continue;
        }
        if request.mode == Mode::Entrypoint {
            wrap_command(c);
        }
        for (volume, path) in mounts_for(request) {
            let read_only = volume != "connd-files" || request.mode != Mode::Entrypoint;
            push(c, "volumeMounts", to_yaml(json!({ "name": volume, "mountPath": path, "readOnly": read_only })));
        }
        for (name, value) in chosen_env(request) {
            push(c, "env", to_yaml(json!({ "name": name, "value": value })));
        }
    }
}

fn chosen_env(request: &Request) -> Vec<(&'static str, String)> {
    env_for(request)
        .into_iter()
        .map(|name| {
            let value = match name {
                "CONND_SOCKET" => SOCKET.to_owned(),
                "CONND_CONTROL_PLANE" => request.control_plane.clone().unwrap_or_default(),
                "CONND_TOKEN_FILE" => TOKEN_FILE.to_owned(),
                _ => request.files_root.clone().unwrap_or_default(),
            };
            (name, value)
        })
        .collect()
}

/// The sorted, distinct uids of the chosen containers (sidecar mode: `--allow-uid`).
fn allowed_uids(spec: &Mapping, chosen: &[usize]) -> Vec<u64> {
    let containers = seq(spec, "containers");
    let mut uids: Vec<u64> = chosen.iter().filter_map(|&i| run_as_user(spec, &containers[i])).collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// `command: [a, b]` → `[/connd/bin/connd, exec, --, a, b]`; `args` stay.
fn wrap_command(c: &mut Value) {
    if let Some(Value::Sequence(command)) = c.get_mut("command") {
        let mut wrapped: Vec<Value> = [BIN, "exec", "--"].into_iter().map(Value::from).collect();
        wrapped.append(command);
        *command = wrapped;
    }
}

/// The hardening every container connd adds gets (the `restricted` Pod Security Standard).
fn security_context() -> serde_json::Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": CONND_UID,
        "runAsGroup": CONND_UID,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn resources(limit: &str) -> serde_json::Value {
    json!({ "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": limit } })
}

/// The mounts of connd's own `serve` or `render` container.
fn own_mounts(request: &Request, socket: bool) -> Vec<serde_json::Value> {
    let mut mounts = Vec::new();
    if socket {
        mounts.push(json!({ "name": "connd-socket", "mountPath": SOCKET_DIR }));
    }
    if request.files_root.is_some() {
        mounts.push(json!({ "name": "connd-files", "mountPath": FILES_DIR }));
    }
    mounts.push(json!({ "name": "connd-config", "mountPath": CONFIG_DIR, "readOnly": true }));
    if request.token_audience.is_some() {
        mounts.push(json!({ "name": "connd-token", "mountPath": TOKEN_DIR, "readOnly": true }));
    }
    mounts
}

/// `--config-dir` and what the annotations add, for `serve` and `render`.
fn own_args(request: &Request) -> Vec<String> {
    let mut args = vec!["--config-dir".to_owned(), CONFIG_DIR.to_owned()];
    if request.files_root.is_some() {
        args.extend(["--files-root".to_owned(), FILES_DIR.to_owned()]);
    }
    if request.token_audience.is_some() {
        args.extend(["--token-file".to_owned(), TOKEN_FILE.to_owned()]);
    }
    args
}

fn own_env(request: &Request) -> Vec<serde_json::Value> {
    let mut env = Vec::new();
    if let Some(url) = &request.control_plane {
        env.push(json!({ "name": "CONND_CONTROL_PLANE", "value": url }));
    }
    env.push(json!({ "name": "CONND_LOG_FORMAT", "value": "json" }));
    env
}

/// The native sidecar: `connd serve`, started before the workload, which starts only
/// once its startupProbe (`connd probe`: the first full resolution) passes.
fn sidecar(request: &Request, uids: &[u64], image: &str) -> Value {
    let mut args = own_args(request);
    args.splice(2..2, ["--socket".to_owned(), SOCKET.to_owned()]);
    if let Some(port) = request.proxy_port {
        args.extend(["--proxy-listen".to_owned(), format!("127.0.0.1:{port}")]);
    }
    let mut env = own_env(request);
    let uids: Vec<String> = uids.iter().map(u64::to_string).collect();
    env.push(json!({ "name": "CONND_ALLOW_UID", "value": uids.join(",") }));
    // Startup: 45 s, beyond serve's --startup-timeout (30 s), after which it exits 69 itself.
    let probe = |period: u32, failures: u32| {
        json!({
            "exec": { "command": ["connd", "probe", "--socket", SOCKET] },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    to_yaml(json!({
        "name": "connd",
        "image": image,
        "restartPolicy": "Always",
        "command": ["connd", "serve"],
        "args": args,
        "env": env,
        "startupProbe": probe(1, 45),
        "readinessProbe": probe(10, 3),
        "resources": resources("64Mi"),
        "securityContext": security_context(),
        "volumeMounts": own_mounts(request, true),
    }))
}

/// Entrypoint mode's init container: copies the binary (static, so it runs in any image)
/// into the in-memory `connd-bin` volume. The image ships a static `cp` for this.
fn install(image: &str) -> Value {
    to_yaml(json!({
        "name": "connd-install",
        "image": image,
        "command": ["cp", "/usr/local/bin/connd", BIN],
        "resources": resources("32Mi"),
        "securityContext": security_context(),
        "volumeMounts": [{ "name": "connd-bin", "mountPath": BIN_DIR }],
    }))
}

/// Render mode's init container: `connd render` once into the files volume.
fn render(request: &Request, image: &str) -> Value {
    to_yaml(json!({
        "name": "connd-render",
        "image": image,
        "command": ["connd", "render"],
        "args": own_args(request),
        "env": own_env(request),
        "resources": resources("64Mi"),
        "securityContext": security_context(),
        "volumeMounts": own_mounts(request, false),
    }))
}

fn volumes(request: &Request) -> Vec<Value> {
    let mut volumes = Vec::new();
    let memory = |limit: &str| json!({ "medium": "Memory", "sizeLimit": limit });
    match request.mode {
        Mode::Sidecar => volumes.push(json!({ "name": "connd-socket", "emptyDir": memory("1Mi") })),
        Mode::Entrypoint => volumes.push(json!({ "name": "connd-bin", "emptyDir": memory("32Mi") })),
        Mode::Render => {}
    }
    if request.files_root.is_some() {
        volumes.push(json!({ "name": "connd-files", "emptyDir": memory("4Mi") }));
    }
    let config = if request.secrets.is_empty() {
        json!({ "name": "connd-config", "configMap": { "name": request.config } })
    } else {
        let mut sources = vec![json!({ "configMap": { "name": request.config } })];
        sources.extend(request.secrets.iter().map(|s| json!({ "secret": { "name": s } })));
        json!({ "name": "connd-config", "projected": { "sources": sources } })
    };
    volumes.push(config);
    if let Some(audience) = &request.token_audience {
        volumes.push(json!({ "name": "connd-token", "projected": { "sources": [{ "serviceAccountToken": {
            "audience": audience, "expirationSeconds": 3600, "path": "token" } }] } }));
    }
    volumes.into_iter().map(to_yaml).collect()
}

/// `spec.securityContext.fsGroup` = connd's gid when the pod sets none: the socket's and
/// the files' group, which every container of the pod is given.
fn set_fs_group(spec: &mut Mapping) {
    if let Some(sc) = mapping_at(spec, "securityContext") {
        sc.entry("fsGroup".into()).or_insert_with(|| Value::from(CONND_UID));
    }
}

/// `metadata.annotations["connd.dev/status"] = "injected"`.
fn mark(template: &mut Value) {
    let meta = template.as_mapping_mut().and_then(|t| mapping_at(t, "metadata"));
    if let Some(annotations) = meta.and_then(|m| mapping_at(m, "annotations")) {
        annotations.insert(annotations::STATUS.into(), annotations::INJECTED.into());
    }
}

/// The mapping at `key`, created when absent or null; `None` for another value.
fn mapping_at<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let v = m.entry(key.into()).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
}

fn seq<'a>(spec: &'a Mapping, field: &str) -> &'a [Value] {
    spec.get(field).and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

/// The list at `field`, created when absent or null (`check` refused any other value).
fn seq_mut<'a>(spec: &'a mut Mapping, field: &str) -> Option<&'a mut Vec<Value>> {
    let v = spec.entry(field.into()).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Sequence(Vec::new());
    }
    v.as_sequence_mut()
}

fn push(c: &mut Value, field: &str, item: Value) {
    if let Some(items) = c.as_mapping_mut().and_then(|c| seq_mut(c, field)) {
        items.push(item);
    }
}

/// A JSON value built with `json!` as YAML; infallible for what `json!` can hold.
fn to_yaml(v: serde_json::Value) -> Value {
    serde_yaml::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Object {
        Object { kind: "Pod".into(), namespace: "shop".into(), name: "p".into() }
    }

    /// Null where a mapping belongs is taken as empty: the mark is written, so injecting
    /// the output again changes nothing rather than refusing connd's own containers.
    #[test]
    fn null_mappings_are_filled_and_the_output_is_left_as_it_is() {
        let settings = Settings { image: "connd:test".into() };
        let pod: Value = serde_yaml::from_str(
            "metadata:\n  annotations: {connd.dev/inject: \"true\", connd.dev/config: c}\nspec:\n  \
             securityContext: null\n  initContainers: null\n  volumes: null\n  containers:\n    \
             - {name: a, image: b, securityContext: {runAsUser: 5}, volumeMounts: null}\n",
        )
        .unwrap();
        let Ok(Outcome::Injected(out)) = inject(pod, &object(), &settings) else { panic!("injected") };
        assert_eq!(out["spec"]["securityContext"]["fsGroup"], Value::from(CONND_UID));
        assert_eq!(out["metadata"]["annotations"][annotations::STATUS], Value::from(annotations::INJECTED));
        assert_eq!(out["spec"]["containers"][0]["volumeMounts"][0]["name"], Value::from("connd-socket"));
        assert_eq!(inject(out, &object(), &settings), Ok(Outcome::Unchanged));
    }

    #[test]
    fn a_list_field_that_is_not_a_list_is_refused() {
        let settings = Settings { image: "connd:test".into() };
        let pod: Value = serde_yaml::from_str(
            "metadata:\n  annotations: {connd.dev/inject: \"true\", connd.dev/config: c}\nspec:\n  \
             volumes: oops\n  containers: [{name: a, image: b, securityContext: {runAsUser: 5}}]\n",
        )
        .unwrap();
        let e = inject(pod, &object(), &settings).unwrap_err();
        assert_eq!(e.problems[0].at, "spec.volumes", "{e}");
    }
}

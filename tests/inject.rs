//! Kubernetes injection end to end: `connd inject` on every kind in every mode, its output
//! validated by kubernetes-validate (strict, Kubernetes 1.29 and the newest it knows);
//! `connd webhook` over real TLS, its patches applied by Python's `jsonpatch` equal to
//! what `inject` prints; refusals that name the object, the annotation and the fix;
//! certificate rotation by replacing the files.

use crate::support::webhook::{
    admission_review, kubernetes_validate, python, replace_file, tls_stream, Ca, Client, Webhook,
};
use crate::support::*;
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

/// The annotations of each mode in the table.
const MODES: [(&str, &str); 4] = [
    (
        "sidecar",
        r#"connd.dev/inject: "true"
        connd.dev/config: orders-connd
        connd.dev/secrets: orders-db, orders-oauth
        connd.dev/proxy-port: "15000"
        connd.dev/files-root: /etc/orders
        connd.dev/control-plane: https://connections.example.internal
        connd.dev/token-audience: connd-control-plane"#,
    ),
    ("sidecar-minimal", "connd.dev/inject: \"true\"\n        connd.dev/config: orders-connd"),
    (
        "entrypoint",
        r#"connd.dev/inject: "true"
        connd.dev/mode: entrypoint
        connd.dev/config: orders-connd
        connd.dev/files-root: /etc/orders
        connd.dev/control-plane: https://connections.example.internal
        connd.dev/token-audience: connd-control-plane"#,
    ),
    (
        "render",
        r#"connd.dev/inject: "true"
        connd.dev/mode: render
        connd.dev/config: orders-connd
        connd.dev/containers: app
        connd.dev/files-root: /etc/orders"#,
    ),
];

const KINDS: [&str; 7] = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"];

/// A pod template's `metadata` and `spec` (at 4 spaces, as under `template:`), with
/// `annotations`, two containers, and values YAML 1.1 would misread if unquoted.
fn template(annotations: &str, restart: &str) -> String {
    format!(
        r#"    metadata:
      labels:
        app: orders
      annotations:
        {annotations}
    spec:
      restartPolicy: {restart}
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
      containers:
        - name: app
          image: registry.example/orders:1.4.2
          command: ["/app/server"]
          args: ["--port", "8080"]
          env:
            - name: FEATURE_X
              value: "yes"
            - name: MODE
              value: "on"
          ports:
            - containerPort: 8080
        - name: worker
          image: registry.example/orders:1.4.2
          command: ["/app/worker"]
          securityContext:
            runAsUser: 10002
"#
    )
}

/// One manifest of `kind` whose pod template has `annotations`.
fn manifest(kind: &str, name: &str, annotations: &str) -> String {
    let restart = if matches!(kind, "Job" | "CronJob") { "Never" } else { "Always" };
    let t = template(annotations, restart);
    let indent = |text: &str, by: usize| text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect::<String>();
    let head = |api: &str| format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: shop\n");
    match kind {
        "Pod" => pod(name, annotations),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            let service = if kind == "StatefulSet" { "  serviceName: orders\n" } else { "" };
            head("apps/v1")
                + "spec:\n"
                + service
                + "  selector:\n    matchLabels:\n      app: orders\n  template:\n"
                + &indent(&t, 0)
        }
        "Job" => head("batch/v1") + "spec:\n  template:\n" + &t,
        "CronJob" => {
            head("batch/v1")
                + "spec:\n  schedule: \"*/5 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n"
                + &indent(&t, 4)
        }
        other => panic!("no manifest for {other}"),
    }
}

/// A Pod whose metadata (labels, annotations) and spec are those of the template.
fn pod(name: &str, annotations: &str) -> String {
    let t = template(annotations, "Always");
    let t: String = t.lines().map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect();
    let t = t.replacen("metadata:\n", &format!("metadata:\n  name: {name}\n  namespace: shop\n"), 1);
    format!("apiVersion: v1\nkind: Pod\n{t}")
}

/// Every kind in every mode, as one stream.
fn table() -> Vec<(String, String)> {
    let mut cases = Vec::new();
    for (mode, annotations) in MODES {
        for kind in KINDS {
            let name = format!("{}-{mode}", kind.to_ascii_lowercase());
            let text = if kind == "Pod" { pod(&name, annotations) } else { manifest(kind, &name, annotations) };
            cases.push((format!("{kind} {mode}"), text));
        }
    }
    cases
}

fn stream(docs: &[String]) -> String {
    docs.join("---\n")
}

/// `connd inject` with `input` on stdin (extra arguments after `inject`).
fn inject(input: &str, args: &[&str]) -> Run {
    let mut child = connd()
        .arg("inject")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("connd runs");
    // A usage error exits before reading its input: the pipe is closed, as for any
    // command in a shell pipeline, and the exit code and stderr tell the rest.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    child.wait_with_output().unwrap().into()
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).expect("YAML")).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str().unwrap() {
        "Pod" => &doc["spec"],
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &doc["spec"]["template"]["spec"],
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().map_or(vec![], |l| l.iter().map(|c| c["name"].as_str().unwrap()).collect())
}

#[test]
fn every_kind_in_every_mode_is_valid_for_kubernetes_and_reinjecting_changes_nothing() {
    let cases = table();
    let input = stream(&cases.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>());
    let run = inject(&input, &["--image", "registry.example/connd:1.2.3"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = docs(&run.stdout);
    assert_eq!(out.len(), cases.len(), "one document out per document in");
    for ((case, _), doc) in cases.iter().zip(&out) {
        let spec = pod_spec(doc);
        let init = names(&spec["initContainers"]);
        let want = match case.split(' ').nth(1).unwrap() {
            "entrypoint" => "connd-install",
            "render" => "connd-render",
            _ => "connd",
        };
        assert_eq!(init, [want], "{case}");
        assert_eq!(spec["initContainers"][0]["image"], "registry.example/connd:1.2.3", "{case}");
        // Values YAML 1.1 reads as booleans stay strings (kubectl's reader is YAML 1.1).
        assert_eq!(spec["containers"][0]["env"][0]["value"], "yes", "{case}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("injected.yaml");
    std::fs::write(&file, &run.stdout).unwrap();
    kubernetes_validate(&file);
    // Every connd command line injected (containers, probes) parses with this binary, and
    // every CONND_* variable set beside it is one that subcommand reads (deploy/check's rule).
    let checker = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/check_manifests.py");
    let commands = std::process::Command::new("python3")
        .args([checker, "connd-commands", connd_bin(), file.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&commands.stdout);
    assert!(commands.status.success(), "{text}{}", String::from_utf8_lossy(&commands.stderr));
    assert_contains(
        &text,
        &["container app: connd exec --", "(env: CONND_CONTROL_PLANE, CONND_FILES_ROOT, CONND_TOKEN_FILE)"],
    );

    let again = inject(&run.stdout, &["--image", "registry.example/connd:1.2.3"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout, run.stdout, "injecting again changes nothing");
}

#[test]
fn each_mode_adds_what_the_docs_say() {
    let input = stream(&MODES.iter().map(|(m, a)| manifest("Deployment", m, a)).collect::<Vec<_>>());
    let run = inject(&input, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = docs(&run.stdout);

    let sidecar = pod_spec(&out[0]);
    let connd = &sidecar["initContainers"][0];
    assert_eq!(connd["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(connd["command"], json!(["connd", "serve"]));
    let args: Vec<&str> = connd["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args.join(" "),
        "--config-dir /etc/connd --socket /run/connd/connd.sock --files-root /run/connd-files \
         --token-file /var/run/secrets/connd/token --proxy-listen 127.0.0.1:15000"
    );
    assert_eq!(
        connd["startupProbe"]["exec"]["command"],
        json!(["connd", "probe", "--socket", "/run/connd/connd.sock"])
    );
    let env = |c: &Value, name: &str| {
        c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone())
    };
    assert_eq!(env(connd, "CONND_ALLOW_UID"), Some(json!("10001,10002")), "both containers' uids");
    assert_eq!(env(connd, "CONND_CONTROL_PLANE"), Some(json!("https://connections.example.internal")));
    assert_eq!(connd["securityContext"]["runAsNonRoot"], true);
    assert_eq!(connd["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(connd["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sidecar["securityContext"]["fsGroup"], 65532, "the socket's group");
    for c in sidecar["containers"].as_array().unwrap() {
        assert_eq!(env(c, "CONND_SOCKET"), Some(json!("/run/connd/connd.sock")));
        let mounts: Vec<&str> =
            c["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
        assert_eq!(mounts, ["/run/connd", "/etc/orders"]);
    }
    let config = sidecar["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "connd-config").unwrap();
    assert_eq!(
        config["projected"]["sources"],
        json!([{ "configMap": { "name": "orders-connd" } }, { "secret": { "name": "orders-db" } }, { "secret": { "name": "orders-oauth" } }])
    );

    let entrypoint = pod_spec(&out[2]);
    assert_eq!(entrypoint["initContainers"][0]["command"], json!(["cp", "/usr/local/bin/connd", "/connd/bin/connd"]));
    assert_eq!(entrypoint["containers"][0]["command"], json!(["/connd/bin/connd", "exec", "--", "/app/server"]));
    assert_eq!(entrypoint["containers"][0]["args"], json!(["--port", "8080"]), "args kept");
    assert_eq!(entrypoint["containers"][1]["command"], json!(["/connd/bin/connd", "exec", "--", "/app/worker"]));
    assert_eq!(env(&entrypoint["containers"][0], "CONND_TOKEN_FILE"), Some(json!("/var/run/secrets/connd/token")));

    let render = pod_spec(&out[3]);
    assert_eq!(render["initContainers"][0]["command"], json!(["connd", "render"]));
    assert_eq!(names(&render["containers"][0]["volumeMounts"]), ["connd-files"], "app is chosen");
    assert!(render["containers"][1].get("volumeMounts").is_none(), "worker is not");
}

#[test]
fn other_documents_keep_their_order_and_meaning() {
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: orders-connd\ndata:\n  \
                      component.yaml: |\n    schemaVersion: 1.2\n    # a comment: yes\n  flag: \"on\"\n  n: \"0660\"\n";
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  ports:\n    - port: 80\n";
    let untouched = manifest("Deployment", "plain", "connd.dev/inject: \"false\"");
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        [manifest("Job", "in-list", MODES[1].1), service.to_owned()]
            .iter()
            .map(|m| m
                .lines()
                .enumerate()
                .map(|(i, l)| format!("  {}{l}\n", if i == 0 { "- " } else { "  " }))
                .collect::<String>())
            .collect::<String>()
    );
    let anchored = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchors\n  labels: &labels\n    app: orders\n\
                    data:\n  <<: *labels\n  tier: web\n";
    let docs_in = [
        config_map.to_owned(),
        manifest("Deployment", "opted", MODES[1].1),
        service.into(),
        untouched,
        list,
        anchored.into(),
    ];
    let input = format!("# leading comment\n{}\n...\n", stream(&docs_in));
    let run = inject(&input, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = docs(&run.stdout);
    let inp = docs(&input);
    assert_eq!(out.len(), 6);
    assert_eq!(
        out[5]["data"],
        json!({ "app": "orders", "tier": "web" }),
        "merge keys applied, as kubectl applies them"
    );
    assert_eq!(out[0], inp[0], "a ConfigMap comes out as it went in");
    assert_eq!(out[2], inp[2]);
    assert_eq!(out[3], inp[3], "not opted in: untouched");
    assert_eq!(out[4]["items"][1], inp[4]["items"][1], "a List's other items untouched");
    assert_eq!(names(&pod_spec(&out[1])["initContainers"]), ["connd"]);
    assert_eq!(names(&pod_spec(&out[4]["items"][0])["initContainers"]), ["connd"], "a List's items injected");
    // YAML 1.1 readers (PyYAML here, go-yaml in kubectl) read the output as YAML 1.2 does.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.yaml");
    std::fs::write(&file, &run.stdout).unwrap();
    let read = python(
        "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        &[file.to_str().unwrap()],
        "pyyaml",
    );
    assert_eq!(serde_json::from_str::<Value>(&read).unwrap(), Value::Array(out));
}

/// One bad manifest, and what the error must name.
struct Bad {
    what: &'static str,
    manifest: String,
    says: &'static [&'static str],
}

fn bad_cases() -> Vec<Bad> {
    let d = |annotations: &str| manifest("Deployment", "orders", annotations);
    vec![
        Bad {
            what: "entrypoint mode, a container without command",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/mode: entrypoint\n        connd.dev/config: c")
                .replace("          command: [\"/app/worker\"]\n", ""),
            says: &["Deployment/shop/orders", "container worker", "has no command", "fix: give the container its command"],
        },
        Bad {
            what: "an unknown mode",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/mode: sidecars\n        connd.dev/config: c"),
            says: &["Deployment/shop/orders", "annotation connd.dev/mode", "unknown mode \"sidecars\"", "write sidecar (the default), entrypoint or render"],
        },
        Bad {
            what: "a non-numeric port",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/proxy-port: http\n        connd.dev/config: c"),
            says: &["annotation connd.dev/proxy-port", "\"http\" is not a port number", "1 to 65535"],
        },
        Bad {
            what: "a missing config",
            manifest: d("connd.dev/inject: \"true\""),
            says: &["annotation connd.dev/config", "missing", "add connd.dev/config: <name of the ConfigMap"],
        },
        Bad {
            what: "an annotation on a Service",
            manifest: "apiVersion: v1\nkind: Service\nmetadata:\n  name: orders\n  annotations:\n    connd.dev/inject: \"true\"\nspec:\n  ports:\n    - port: 80\n".into(),
            says: &["Service/orders", "annotation connd.dev/inject", "connd injects into pod templates only"],
        },
        Bad {
            what: "a volume with connd's name",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/config: c").replace(
                "      containers:\n",
                "      volumes:\n        - name: connd-socket\n          emptyDir: {}\n      containers:\n",
            ),
            says: &["volume connd-socket", "already has a volume named connd-socket", "rename that volume"],
        },
        Bad {
            what: "a container with connd's name",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/config: c").replace("- name: worker", "- name: connd"),
            says: &["container connd", "already has a container named connd"],
        },
        Bad {
            what: "a sidecar for a container of unknown uid",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/config: c").replace("        runAsUser: 10001\n", ""),
            says: &["container app", "has no runAsUser", "set securityContext.runAsUser"],
        },
        Bad {
            what: "a container list naming no container",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/config: c\n        connd.dev/containers: api"),
            says: &["annotation connd.dev/containers", "no container named \"api\"", "app, worker"],
        },
        Bad {
            what: "a misspelt annotation",
            manifest: d("connd.dev/inject: \"true\"\n        connd.dev/config: c\n        connd.dev/proxyport: \"1\""),
            says: &["annotation connd.dev/proxyport", "did you mean connd.dev/proxy-port?"],
        },
    ]
}

#[test]
fn bad_annotations_are_refused_naming_object_annotation_and_fix_and_nothing_is_written() {
    let good = manifest("Deployment", "fine", MODES[0].1);
    for case in bad_cases() {
        let input = stream(&[good.clone(), case.manifest.clone()]);
        let run = inject(&input, &[]);
        assert_eq!(run.code, 78, "{}: {run:?}", case.what);
        assert_eq!(run.stdout, "", "{}: nothing written", case.what);
        assert_contains(&run.stderr, case.says);
        assert_contains(&run.stderr, &["<stdin>:"]);
    }
}

/// `kubectl annotate deployment/orders connd.dev/inject=true ...` sets the Deployment's own
/// annotations: `inject` reads them as its template's (the template's own win).
#[test]
fn annotations_on_the_workload_itself_count_as_its_templates() {
    let on_workload = "  annotations:\n    connd.dev/inject: \"true\"\n    connd.dev/config: orders-connd\n    \
                       connd.dev/mode: render\n    connd.dev/files-root: /etc/orders\n";
    let deployment = manifest("Deployment", "orders", "connd.dev/mode: entrypoint").replacen(
        "  namespace: shop\n",
        &format!("  namespace: shop\n{on_workload}"),
        1,
    );
    let cron = manifest("CronJob", "nightly", "app.kubernetes.io/part-of: shop").replacen(
        "  namespace: shop\n",
        &format!("  namespace: shop\n{on_workload}"),
        1,
    );
    let run = inject(&stream(&[deployment, cron]), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = docs(&run.stdout);
    assert_eq!(names(&pod_spec(&out[0])["initContainers"]), ["connd-install"], "the template's mode wins");
    assert_eq!(names(&pod_spec(&out[1])["initContainers"]), ["connd-render"]);
    let annotations = &out[1]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["connd.dev/config"], "orders-connd", "copied to the template, so pods carry them");
    assert_eq!(annotations["connd.dev/status"], "injected");
    let again = inject(&run.stdout, &[]);
    assert_eq!(again.stdout, run.stdout, "injecting again changes nothing");
}

#[test]
fn every_refused_object_of_a_stream_is_listed_at_once() {
    let bad = bad_cases();
    let input = stream(&bad.iter().map(|b| b.manifest.clone()).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, &input).unwrap();
    let run = run(&["inject", "-f", file.to_str().unwrap()]);
    assert_eq!(run.code, 78, "{run:?}");
    assert_contains(&run.stderr, &[&format!("nothing was written: {} object(s) cannot be injected", bad.len())]);
    for b in &bad {
        assert_contains(&run.stderr, b.says);
    }
    // Each object is named with the line its document starts on.
    let second = input.lines().position(|l| l == "---").unwrap() + 2;
    assert_contains(&run.stderr, &[&format!("{}:{second}: Deployment/shop/orders:", file.display())]);
}

#[test]
fn invalid_yaml_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    let good = manifest("Deployment", "fine", MODES[0].1);
    std::fs::write(&file, format!("{good}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n")).unwrap();
    let run = run(&["inject", "-f", file.to_str().unwrap()]);
    assert_eq!(run.code, 78, "{run:?}");
    assert_eq!(run.stdout, "");
    let line = good.lines().count() + 5;
    assert_contains(&run.stderr, &[&format!("{}:{line}: invalid YAML", file.display())]);

    let missing = crate::support::run(&["inject", "-f", "/nonexistent/app.yaml"]);
    assert_eq!(missing.code, 78, "{missing:?}");
    assert_contains(&missing.stderr, &["cannot read /nonexistent/app.yaml"]);
}

/// The Pod form of every case of the table (the webhook sees Pods), each with the pod
/// `connd inject` prints for it.
fn pods_and_injected() -> Vec<(Value, Value)> {
    let pods: Vec<String> = MODES.iter().enumerate().map(|(i, (m, a))| pod(&format!("pod-{i}-{m}"), a)).collect();
    let run = inject(&stream(&pods), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    docs(&stream(&pods)).into_iter().zip(docs(&run.stdout)).collect()
}

fn decode_patch(response: &Value) -> Value {
    let patch = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().expect("a patch")).unwrap();
    serde_json::from_slice(&patch).expect("the patch is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_patches_applied_by_jsonpatch_give_what_inject_prints() {
    let ca = Ca::new("connd webhook test CA");
    let webhook = Webhook::start(&ca.issue(), &[]);
    let mut client = Client::connect(webhook.addr, &ca.der()).await.expect("TLS to the webhook");
    let mut applied = Vec::new();
    for (i, (pod, injected)) in pods_and_injected().into_iter().enumerate() {
        let uid = format!("705ab4f5-6393-11e8-b7cc-42010a8000{i:02}");
        let reply = client.review(&admission_review(&uid, "", "Pod", "shop", &pod)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], uid);
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        applied.push(json!({ "pod": pod, "patch": decode_patch(&answer["response"]), "injected": injected }));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&applied).unwrap()).unwrap();
    let script = "import json, sys, jsonpatch\n\
                  cases = json.load(open(sys.argv[1]))\n\
                  print(json.dumps([jsonpatch.JsonPatch(c['patch']).apply(c['pod']) for c in cases]))";
    let patched: Vec<Value> = serde_json::from_str(&python(script, &[file.to_str().unwrap()], "jsonpatch")).unwrap();
    for (case, got) in applied.iter().zip(patched) {
        assert_eq!(
            got, case["injected"],
            "patch applied by jsonpatch vs connd inject for {}",
            case["pod"]["metadata"]["name"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_leaves_alone_what_it_must_and_denies_bad_annotations() {
    let ca = Ca::new("connd webhook test CA");
    let webhook = Webhook::start(&ca.issue(), &[]);
    let mut client = Client::connect(webhook.addr, &ca.der()).await.expect("TLS to the webhook");
    let opted: Value = docs(&pod("orders", MODES[1].1)).remove(0);
    let plain: Value = docs(&pod("orders", "app.kubernetes.io/part-of: shop")).remove(0);
    let deployment: Value = docs(&manifest("Deployment", "orders", MODES[1].1)).remove(0);
    let (_, injected) = pods_and_injected().remove(1);
    let untouched = [
        ("a pod without the opt-in", admission_review("u1", "", "Pod", "shop", &plain)),
        ("a Deployment", admission_review("u2", "apps", "Deployment", "shop", &deployment)),
        ("kube-system", admission_review("u3", "", "Pod", "kube-system", &opted)),
        ("kube-public", admission_review("u4", "", "Pod", "kube-public", &opted)),
        ("an injected pod (reinvocation)", admission_review("u5", "", "Pod", "shop", &injected)),
    ];
    for (what, review) in &untouched {
        let answer = client.review(review).await.json();
        assert_eq!(answer["response"]["uid"], review["request"]["uid"], "{what}");
        assert_eq!(answer["response"]["allowed"], true, "{what}");
        assert!(answer["response"].get("patch").is_none(), "{what}: no patch: {answer}");
    }
    // A pod made by a controller has only generateName at admission.
    let mut bad = docs(&pod("x", "connd.dev/inject: \"true\"\n        connd.dev/mode: sidecars")).remove(0);
    bad["metadata"].as_object_mut().unwrap().remove("name");
    bad["metadata"]["generateName"] = json!("orders-7d9f5c-");
    let answer = client.review(&admission_review("u6", "", "Pod", "shop", &bad)).await.json();
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert_contains(
        message,
        &["Pod/shop/orders-7d9f5c-*", "annotation connd.dev/mode", "unknown mode \"sidecars\"", "fix: write sidecar"],
    );
    assert_contains(message, &["annotation connd.dev/config", "missing"]);

    for (what, body) in [
        ("not JSON", b"{not json".to_vec()),
        ("a v1beta1 review", serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": { "uid": "x", "kind": { "kind": "Pod" } } })).unwrap()),
        ("no request", serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" })).unwrap()),
    ] {
        let reply = client.request("POST", "/mutate", body).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
    }
    assert_eq!(client.request("GET", "/mutate", "").await.status, 405);
    assert_eq!(client.request("GET", "/healthz", "").await.status, 200);
    assert_eq!(client.request("GET", "/readyz", "").await.status, 200);
    let metrics = client.request("GET", "/metrics", "").await.text();
    assert_contains(
        &metrics,
        &[
            "connd_webhook_reviews_total{result=\"allowed\"} 5",
            "connd_webhook_reviews_total{result=\"denied\"} 1",
            "connd_webhook_reviews_total{result=\"malformed\"} 3",
            "connd_webhook_reviews_total{result=\"patched\"} 0",
            "connd_webhook_review_duration_seconds_count 9",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rereads_its_certificate_without_dropping_open_connections() {
    let (old_ca, new_ca) = (Ca::new("connd old CA"), Ca::new("connd new CA"));
    let old = old_ca.issue();
    let webhook = Webhook::start(&old, &[]);
    let mut open = Client::connect(webhook.addr, &old_ca.der()).await.expect("TLS with the first certificate");
    assert_eq!(open.server_cert, old.der);

    // A half-written rotation (a new certificate, the old key) keeps the last good pair.
    let new = new_ca.issue();
    replace_file(&webhook.cert, &new.cert_pem);
    let during = Client::connect(webhook.addr, &old_ca.der()).await.expect("the old pair still serves");
    assert_eq!(during.server_cert, old.der);

    replace_file(&webhook.key, &new.key_pem);
    let fresh = Client::connect(webhook.addr, &new_ca.der()).await.expect("TLS with the new certificate");
    assert_eq!(fresh.server_cert, new.der, "a new connection gets the new certificate");
    assert!(Client::connect(webhook.addr, &old_ca.der()).await.is_err(), "the old CA no longer verifies it");

    // The connection opened before the rotation still answers.
    let (pod, _) = pods_and_injected().remove(0);
    let reply = open.review(&admission_review("rot", "", "Pod", "shop", &pod)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["response"]["allowed"], true);
    let log = webhook.stderr();
    assert_contains(
        &log,
        &["the changed TLS certificate cannot be used; the previous one stays", "TLS certificate re-read"],
    );
    let metrics = open.request("GET", "/metrics", "").await.text();
    assert_contains(
        &metrics,
        &[
            "connd_webhook_certificate_reloads_total{result=\"ok\"} 1",
            "connd_webhook_certificate_reloads_total{result=\"error\"} 1",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_through_its_shutdown_delay_and_refuses_a_bad_certificate_at_start() {
    let ca = Ca::new("connd webhook test CA");
    let webhook = Webhook::start(&ca.issue(), &["--shutdown-grace", "2s", "--shutdown-delay", "1s"]);
    let mut client = Client::connect(webhook.addr, &ca.der()).await.unwrap();
    assert_eq!(client.request("GET", "/readyz", "").await.status, 200);
    let started = std::time::Instant::now();
    webhook.signal(nix::sys::signal::Signal::SIGTERM);
    // During the delay: not ready, but reviews on new connections are still answered.
    let mut status = 200;
    while status == 200 && started.elapsed() < Duration::from_secs(1) {
        status = client.request("GET", "/readyz", "").await.status;
    }
    assert_eq!(status, 503, "not ready once SIGTERM arrived");
    let mut late = Client::connect(webhook.addr, &ca.der()).await.expect("still accepting during the delay");
    let (pod, _) = pods_and_injected().remove(0);
    assert_eq!(late.review(&admission_review("late", "", "Pod", "shop", &pod)).await.status, 200);
    let code = tokio::task::spawn_blocking(move || {
        let mut webhook = webhook;
        webhook.wait()
    });
    assert_eq!(code.await.unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_secs(1), "the delay is kept");

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (a, b) = (ca.issue(), ca.issue());
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    let run = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            crate::support::run(&[
                "webhook",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ])
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(run.code, 78, "{run:?}");
    assert_contains(&run.stderr, &["cannot use key", "tls.key", "the key the certificate was issued for"]);
}

#[tokio::test]
async fn stray_signals_do_not_end_the_webhook() {
    let ca = Ca::new("connd webhook test CA");
    let webhook = Webhook::start(&ca.issue(), &[]);
    let mut client = Client::connect(webhook.addr, &ca.der()).await.unwrap();
    assert_eq!(client.request("GET", "/healthz", "").await.status, 200);
    use nix::sys::signal::Signal;
    for signal in [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        webhook.signal(signal);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fresh = Client::connect(webhook.addr, &ca.der()).await.expect("still listening");
        assert_eq!(fresh.request("GET", "/healthz", "").await.status, 200, "after {signal}");
    }
}

/// A client that sends a review's head and then stalls gets 408, and its connection slot
/// back, instead of holding it as long as it likes.
#[tokio::test]
async fn a_review_body_that_stalls_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("connd webhook test CA");
    let webhook = Webhook::start(&ca.issue(), &["--max-connections", "1"]);
    let mut stalled = tls_stream(webhook.addr, &ca.der()).await.unwrap();
    let head = "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 30s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_contains(&answer, &["did not arrive within"]);
    let mut next = Client::connect(webhook.addr, &ca.der()).await.expect("the slot is free again");
    assert_eq!(next.request("GET", "/healthz", "").await.status, 200);
}

#[test]
fn an_image_that_would_break_the_manifest_is_a_usage_error() {
    let pod = manifest("Pod", "p", MODES[0].1);
    for (image, says) in [("", "an image reference is needed"), ("evil\nimage: x", "no spaces, line breaks")] {
        let run = inject(&pod, &["--image", image]);
        assert_eq!(run.code, 64, "{image:?}: {run:?}");
        assert_eq!(run.stdout, "", "nothing written");
        assert_contains(&run.stderr, &["--image", says]);
    }
    let run = inject(&pod, &["--image", "registry.example/connd:0.1.0"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_contains(&run.stdout, &["image: registry.example/connd:0.1.0"]);
}

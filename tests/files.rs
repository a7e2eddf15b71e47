//! Files (docs/files.md) end to end: every format read back by its real reader (Python's
//! tomllib, json, PyYAML, python-dotenv; java.util.Properties), atomic writes under a
//! reader in a tight loop, mtime kept on an unchanged render, symlinks, path escapes,
//! `exec` failing closed, bad templates and values, and `serve`/`run` keeping files
//! current: a kubelet swap, a renewed token from the real OpenID provider, a removed
//! entry, a read-only target folder, `--on-file-change`.

use crate::support::kubelet::AtomicDir;
use crate::support::oidc::{Client, OidcProvider};
use crate::support::*;
use connd::serve::api::client::request;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DB: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const HR: &str = "29d2648b-d29c-4452-afdd-1b9311e81412";
/// How long an awaited change may take before a test gives up: generous, for shared CI.
const PATIENCE: Duration = Duration::from_secs(20);

/// Values that trip readers: quotes, escapes, line breaks, YAML 1.1 booleans and
/// numbers, non-ASCII outside the BMP, leading and trailing spaces, comment marks.
const TRICKY: [&str; 22] = [
    "plain",
    "on",
    "1.10",
    "007",
    "2001-12-14",
    "a b",
    " lead",
    "trail ",
    "x=y:z#!",
    "it's",
    "say \"hi\"",
    "$HOME ${X}",
    "back\\slash",
    "line1\nline2",
    "tab\there",
    "é ünï",
    "🐞",
    "",
    "#notcomment",
    "[x]",
    "-1e3",
    "ctl\u{1}\u{7f}\u{85}",
];

/// A config directory with one `kind: File` of `format` holding `values` (name, value).
fn fixture_with_file(format: &str, values: &[(String, String)]) -> Fixture {
    let mut doc = format!("kind: File\npath: /out/file.{format}\nformat: {format}\nvalues:\n");
    for (name, value) in values {
        // A JSON string is a YAML double-quoted scalar.
        doc.push_str(&format!("  - name: {}\n    value: {}\n", yaml_str(name), yaml_str(value)));
    }
    Fixture::with(
        &component_yaml(&[("orders-db", "database:pg/orders")]),
        &connection(DB, "orders-db", &[("HostName", "db.internal"), ("Password", "\"p@ss:w/rd\"")]),
    )
    .file("file.yaml", &doc)
}

/// A YAML double-quoted scalar: a JSON string, with what YAML refuses raw escaped.
fn yaml_str(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap()
        .chars()
        .map(|c| if ('\u{7f}'..='\u{9f}').contains(&c) { format!("\\u{:04X}", c as u32) } else { c.to_string() })
        .collect()
}

/// Runs `connd render` on `fx` with a fresh files root; returns the root.
fn render(fx: &Fixture) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    root
}

/// Runs a Python snippet that prints JSON for the file at argv[1].
fn python(code: &str, file: &Path) -> serde_json::Value {
    let out = Command::new("python3").arg("-c").arg(code).arg(file).output().expect("python3 runs");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Flattens nested objects into dotted names.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        other => panic!("{prefix} read as a {other:?}, not a string"),
    }
}

fn tricky(prefix: &str) -> Vec<(String, String)> {
    TRICKY.iter().enumerate().map(|(i, v)| (format!("{prefix}{i:02}"), (*v).to_owned())).collect()
}

#[test]
fn structured_formats_read_back_exactly_by_python() {
    // Dotted names nest: a table per module, as Ballerina's Config.toml has it.
    let mut values = tricky("hr.v");
    values.extend(tricky("top"));
    let readers = [
        ("json", "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))"),
        ("toml", "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],'rb'))))"),
        // PyYAML reads YAML 1.1, where `on` is a boolean and `2001-12-14` a date.
        ("yaml", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"),
    ];
    for (format, code) in readers {
        let fx = fixture_with_file(format, &values);
        let root = render(&fx);
        let file = root.path().join(format!("out/file.{format}"));
        let mut read = BTreeMap::new();
        flatten("", &python(code, &file), &mut read);
        let want: BTreeMap<String, String> = values.iter().cloned().collect();
        assert_eq!(read, want, "{format}: {}", std::fs::read_to_string(&file).unwrap());
    }
}

#[test]
fn toml_nests_dotted_names_as_ballerina_reads_them() {
    let component = component_yaml(&[("hr-connection", "thirdparty:hr/v1")])
        + "configurations:\n  file:\n    - name: Config.toml\n      mountPath: /home/ballerina/conf\n      type: toml\n      values:\n        \
           - name: hr.serviceUrl\n          valueFrom: { connectionRef: { name: hr-connection, key: ServiceURL } }\n        \
           - name: logLevel\n          value: info\n";
    let fx = Fixture::with(&component, &connection(HR, "hr-connection", &[("ServiceURL", "https://hr.internal/v1")]));
    let root = render(&fx);
    let text = std::fs::read_to_string(root.path().join("home/ballerina/conf/Config.toml")).unwrap();
    assert_eq!(text, "logLevel = \"info\"\n\n[hr]\nserviceUrl = \"https://hr.internal/v1\"\n");
}

#[test]
fn dotenv_reads_back_exactly_by_python_dotenv() {
    // Without interpolation: python-dotenv expands `${X}` even in single quotes, where
    // systemd's EnvironmentFile= and docker compose keep it (and no quoting stops it).
    let values: Vec<(String, String)> = tricky("V_");
    let fx = fixture_with_file("dotenv", &values);
    let root = render(&fx);
    let file = root.path().join("out/file.dotenv");
    let code = "import json,sys; from dotenv import dotenv_values; print(json.dumps(dotenv_values(sys.argv[1], interpolate=False)))";
    let mut read = BTreeMap::new();
    flatten("", &python(code, &file), &mut read);
    let want: BTreeMap<String, String> = values.into_iter().collect();
    assert_eq!(read, want, "{}", std::fs::read_to_string(&file).unwrap());
}

#[test]
fn properties_read_back_exactly_by_java() {
    if Command::new("java").arg("-version").output().is_err() {
        panic!("no `java` on PATH: install a JDK (.ci/run installs default-jdk-headless)");
    }
    let mut values = tricky("spring.v");
    values.push(("key with spaces=and:marks#!".into(), "v".into()));
    values.push(("🐞 key".into(), "🐞".into()));
    let fx = fixture_with_file("properties", &values);
    let root = render(&fx);
    let file = root.path().join("out/file.properties");
    // Both overloads of Properties.load: the ISO-8859-1 stream and a UTF-8 reader.
    let java = root.path().join("ReadProps.java");
    std::fs::write(
        &java,
        r#"import java.io.*; import java.nio.charset.StandardCharsets; import java.util.*;
public class ReadProps { public static void main(String[] a) throws Exception {
  Properties s = new Properties(); try (InputStream in = new FileInputStream(a[0])) { s.load(in); }
  Properties r = new Properties(); try (Reader in = new InputStreamReader(new FileInputStream(a[0]), StandardCharsets.UTF_8)) { r.load(in); }
  if (!s.equals(r)) { System.err.println("stream and reader differ"); System.exit(2); }
  for (String k : s.stringPropertyNames()) System.out.println(hex(k) + "\t" + hex(s.getProperty(k))); }
  static String hex(String s) { StringBuilder b = new StringBuilder(); for (byte x : s.getBytes(StandardCharsets.UTF_8)) b.append(String.format("%02x", x)); return b.toString(); } }
"#,
    )
    .unwrap();
    let out = Command::new("java").arg(&java).arg(&file).output().expect("java runs");
    assert!(out.status.success(), "java: {}", String::from_utf8_lossy(&out.stderr));
    let unhex = |h: &str| {
        let bytes: Vec<u8> = (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect();
        String::from_utf8(bytes).unwrap()
    };
    let read: BTreeMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap_or((l, ""));
            (unhex(k), unhex(v))
        })
        .collect();
    let want: BTreeMap<String, String> = values.into_iter().collect();
    assert_eq!(read, want, "{}", std::fs::read_to_string(&file).unwrap());
    assert!(std::fs::read(&file).unwrap().is_ascii(), "the file is ASCII, the same in ISO-8859-1 and UTF-8");
}

#[test]
fn a_template_builds_a_dsn_strictly() {
    let fx = Fixture::with(
        &(component_yaml(&[("orders-db", "database:pg/orders")]) + "configurations:\n  env:\n    - name: LEVEL\n      value: debug\n"),
        &connection(DB, "orders-db", &[("HostName", "db"), ("Username", "\"us er\""), ("Password", "\"p@ss:w/rd\"")]),
    )
    .file(
        "dsn.yaml",
        "kind: File\npath: /run/app/db.env\nformat: template\nmode: \"0400\"\ntemplate: |\n  \
         DATABASE_URL=postgres://{{ connections[\"orders-db\"].Username | urlencode }}:{{ connections[\"orders-db\"].Password | urlencode }}@{{ connections[\"orders-db\"].HostName }}/orders\n  \
         LEVEL={{ env.LEVEL }}\n",
    );
    let root = render(&fx);
    let file = root.path().join("run/app/db.env");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "DATABASE_URL=postgres://us%20er:p%40ss%3Aw%2Frd@db/orders\nLEVEL=debug\n"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o400);
    assert_eq!(std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);

    // `check` lists the file and what it reads, the password redacted.
    let out = fx.run("check", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stdout,
        &["/run/app/db.env  template  0400", "orders-db.Password", "<redacted>", "orders-db.HostName"],
    );
    assert!(!out.stdout.contains("p@ss"), "{out:?}");
    let out = fx.run("check", &["--files-root", &root.path().display().to_string(), "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let file = &plan["files"][0];
    assert_eq!(
        (file["path"].as_str(), file["format"].as_str(), file["mode"].as_str()),
        (Some("/run/app/db.env"), Some("template"), Some("0400"))
    );
    let password = file["values"].as_array().unwrap().iter().find(|v| v["from"] == "orders-db.Password").unwrap();
    assert_eq!((&password["value"], &password["redacted"]), (&serde_json::Value::Null, &serde_json::Value::Bool(true)));
    assert!(!out.stdout.contains("p@ss"), "{out:?}");
}

#[test]
fn bad_templates_and_paths_are_config_errors_with_lines_all_at_once() {
    let fx = Fixture::with(
        &(component_yaml(&[("orders-db", "database:pg/orders")])
            + "configurations:\n  file:\n    - name: x.json\n      mountPath: ../../etc\n      type: json\n      values: []\n"),
        &connection(DB, "orders-db", &[("HostName", "db")]),
    );
    let root = tempfile::tempdir().unwrap();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["component.yaml:9: mountPath \"../../etc\" contains `..`"]);

    let fx = Fixture::with(&component_yaml(&[("orders-db", "database:pg/orders")]), &connection(DB, "orders-db", &[("HostName", "db")]))
    .file("a.yaml", "kind: File\npath: /a\nformat: template\ntemplate: |\n  ok\n  {% for x in [1] %}\n  never ends\n")
    .file("b.yaml", "kind: File\npath: /b\nformat: template\ntemplate: |\n  {{ connections[\"orders-db\"].Password }}\n")
    .file("c.yaml", "kind: File\npath: /c\nformat: template\ntemplate: |\n  {% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n")
    .file("d.yaml", "kind: File\npath: /d\nformat: template\ntemplate: |\n  {% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}\n")
    .file("e.yaml", "kind: File\npath: /e\nformat: template\ntemplate: |\n  {{ connections.nope.Key }}{{ env.NOPE }}\n")
    .file("f.yaml", "kind: File\npath: /f\nformat: dotenv\nmode: \"0999\"\nvalues:\n  - name: A\n    valueFrom: { connectionRef: { name: orders-db, key: Nope } }\n")
    .file("g.yaml", "kind: File\npath: /a\nformat: json\nowner: no-such-user-xyz\nvalues: []\n")
    .file("h.yaml", "kind: File\npath: /h\nformat: json\nvalues:\n  - name: A\n    valueFrom: { connectionRef: { name: other, key: K } }\n");
    let root = tempfile::tempdir().unwrap();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "a.yaml:6: template of /a: the template does not parse",
            "b.yaml:5: template of /b: the template uses an undefined value: connection \"orders-db\" has no key \"Password\" (its keys: HostName)",
            "c.yaml:5: template of /c: the template ran past its limit",
            "d.yaml:5: template of /d: the template expands past 1048576 bytes",
            "e.yaml:5: template of /e: the template uses an undefined value: connection \"nope\" is not referenced",
            "f.yaml:4: mode is not an octal file mode",
            "g.yaml:4: no user named \"no-such-user-xyz\" exists",
            "h.yaml:5: value A of /h takes K from connection \"other\", which the component does not reference",
        ],
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing was written");

    // A key the connection lacks, and two entries for one path.
    let fx = Fixture::with(&component_yaml(&[("orders-db", "database:pg/orders")]), &connection(DB, "orders-db", &[("HostName", "db")]))
        .file("f.yaml", "kind: File\npath: /f\nformat: dotenv\nvalues:\n  - name: A\n    valueFrom: { connectionRef: { name: orders-db, key: Nope } }\n---\nkind: File\npath: /f\nformat: json\nvalues: []\n");
    let out = fx.run("check", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "f.yaml:5: value A of /f takes Nope from connection \"orders-db\", which has no such key",
            "use one of: HostName",
            "f.yaml:9: two entries write /f (the first is at",
        ],
    );
}

/// An entry with errors of its own (a bad mode, a `..` path) still has its template and
/// values checked: one `check` lists every error, not the contents' after a second run.
#[test]
fn an_entry_with_a_bad_mode_and_path_still_has_its_contents_checked() {
    let fx = Fixture::with(&component_yaml(&[("orders-db", "database:pg/orders")]), &connection(DB, "orders-db", &[("Password", "p")]))
        .file("t.yaml", "kind: File\npath: /run/../t.env\nformat: template\nmode: \"0999\"\ntemplate: |\n  {{ connections[\"orders-db\"].Pasword }}\n")
        .file("v.yaml", "kind: File\npath: /v\nformat: dotenv\nmode: \"0999\"\nvalues:\n  - name: A\n    valueFrom: { connectionRef: { name: orders-db, key: Nope } }\n");
    let root = tempfile::tempdir().unwrap();
    let out = fx.run("check", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "t.yaml:2: path \"/run/../t.env\" contains `..`",
            "t.yaml:4: mode is not an octal file mode",
            "t.yaml:6: template of /run/../t.env: the template uses an undefined value: connection \"orders-db\" has no key \"Pasword\"",
            "v.yaml:4: mode is not an octal file mode",
            "v.yaml:6: value A of /v takes Nope from connection \"orders-db\", which has no such key",
            "(5 errors)",
        ],
    );
}

#[test]
fn a_nul_value_is_refused_where_the_format_cannot_hold_it() {
    let values = vec![("A".to_owned(), "x\0y".to_owned())];
    let fx = fixture_with_file("dotenv", &values);
    let root = tempfile::tempdir().unwrap();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["value A holds a NUL byte, which a dotenv file cannot hold"]);
    assert!(!root.path().join("out").exists(), "nothing was written");
    // JSON holds it.
    let fx = fixture_with_file("json", &values);
    let root = render(&fx);
    let read =
        python("import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))", &root.path().join("out/file.json"));
    assert_eq!(read["A"], "x\0y");
}

#[test]
fn an_unchanged_render_keeps_the_file_and_its_mtime() {
    let fx = fixture_with_file("json", &tricky("v"));
    let root = render(&fx);
    let file = root.path().join("out/file.json");
    let old = filetime(&file, "2001-02-03 04:05:06");
    let inode = std::fs::metadata(&file).unwrap().ino();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.mtime(), meta.ino()), (old, inode), "the file was rewritten");
}

/// Sets `file`'s mtime with touch(1); returns it in seconds.
fn filetime(file: &Path, when: &str) -> i64 {
    assert!(Command::new("touch").arg("-m").arg("-d").arg(when).arg(file).status().unwrap().success());
    std::fs::metadata(file).unwrap().mtime()
}

#[test]
fn a_symlink_at_the_target_is_replaced_and_a_symlinked_folder_out_of_the_root_refused() {
    let fx = fixture_with_file("json", &[("a".into(), "new".into())]);
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::fs::create_dir(root.path().join("out")).unwrap();
    std::os::unix::fs::symlink(&victim, root.path().join("out/file.json")).unwrap();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me", "written through the symlink");
    let meta = std::fs::symlink_metadata(root.path().join("out/file.json")).unwrap();
    assert!(meta.is_file(), "the symlink was replaced by a file");

    // The folder itself leads out of the root.
    std::fs::remove_dir_all(root.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    let out = fx.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["/out/file.json would leave the files root", "outside the files root"]);
    assert!(!outside.path().join("file.json").exists());
}

#[test]
fn exec_writes_the_files_first_and_fails_closed_when_a_value_is_missing() {
    let fx = fixture_with_file("json", &[("a".into(), "1".into())]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let out = fx.run("exec", &["--files-root", &r, "--", "cat", &format!("{r}/out/file.json")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "{\n  \"a\": \"1\"\n}\n");

    // A `file:` source that is missing: no file, no workload.
    let fx = Fixture::with(
        &component_yaml(&[("orders-db", "database:pg/orders")]),
        &connection(DB, "orders-db", &[("Password", "{ file: /nonexistent/pw }")]),
    )
    .file("f.yaml", "kind: File\npath: /out/db.env\nformat: dotenv\nvalues:\n  - name: PW\n    valueFrom: { connectionRef: { name: orders-db, key: Password } }\n");
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("started");
    let out = fx.run(
        "exec",
        &["--files-root", &root.path().display().to_string(), "--", "touch", &marker.display().to_string()],
    );
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["cannot read Password of connection \"orders-db\" from /nonexistent/pw"]);
    assert!(!marker.exists(), "the workload started");
    assert!(!root.path().join("out").exists(), "a file was left behind");
}

#[test]
fn a_reader_never_sees_a_partial_file_during_1000_renders() {
    use connd::config::model::FileFormat;
    use connd::files::{write, Content, PlannedFile};
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("app/conf.json");
    let file = PlannedFile {
        path: "/app/conf.json".into(),
        target: target.clone(),
        format: FileFormat::Json,
        mode: 0o600,
        owner: None,
        group: None,
        content: Content::Values(Vec::new()),
        origin: connd::config::Origin::file("x"),
        tokens: Vec::new(),
    };
    let a = vec![b'a'; 64 * 1024];
    let b = vec![b'b'; 96 * 1024];
    write::write(root.path(), &file, &a).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, target, a, b) = (stop.clone(), target.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let seen = std::fs::read(&target).expect("the file is always there");
                assert!(seen == a || seen == b, "a partial file of {} bytes", seen.len());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..1000 {
        let bytes = if i % 2 == 0 { &b } else { &a };
        assert_eq!(write::write(root.path(), &file, bytes).unwrap(), write::Outcome::Written);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw only whole files");
    assert!(reads > 0);
    let left: Vec<PathBuf> = std::fs::read_dir(target.parent().unwrap()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, vec![target], "no temporary file left behind");
}

/// Waits until `pred` holds for the file's content (None: absent).
async fn file_until(path: &Path, what: &str, pred: impl Fn(Option<&str>) -> bool) -> Option<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).ok();
        if pred(text.as_deref()) {
            return text;
        }
        assert!(start.elapsed() < PATIENCE, "{} never {what}; it is {text:?}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files_component(level: &str) -> String {
    component_yaml(&[("orders-db", "database:pg/orders")])
        + "configurations:\n  file:\n    - name: app.json\n      mountPath: /conf\n      type: json\n      values:\n        \
           - name: db.host\n          valueFrom: { connectionRef: { name: orders-db, key: HostName } }\n        \
           - name: level\n          value: "
        + level
        + "\n"
}

#[tokio::test]
async fn serve_re_renders_on_a_kubelet_swap_and_removes_what_is_no_longer_planned() {
    let conns = IDENTITY.to_owned() + &connection(DB, "orders-db", &[("HostName", "db1")]);
    let extra = "kind: File\npath: /conf/extra.env\nformat: dotenv\nvalues:\n  - name: A\n    value: x\n";
    let mut dir =
        AtomicDir::new(&[("component.yaml", &files_component("info")), ("c.yaml", &conns), ("extra.yaml", extra)]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let daemon = Daemon::start(dir.path(), &["--files-root", &r], &[]);
    daemon.ready().await;
    let app = root.path().join("conf/app.json");
    file_until(&app, "was rendered", |t| t.is_some_and(|t| t.contains("\"db1\""))).await;
    file_until(&root.path().join("conf/extra.env"), "was rendered", |t| t.is_some()).await;

    let conns = IDENTITY.to_owned() + &connection(DB, "orders-db", &[("HostName", "db2")]);
    dir.update(&[("component.yaml", &files_component("debug")), ("c.yaml", &conns)]);
    let text = file_until(&app, "was re-rendered", |t| t.is_some_and(|t| t.contains("\"db2\""))).await.unwrap();
    assert!(text.contains("\"debug\""), "{text}");
    file_until(&root.path().join("conf/extra.env"), "was removed", |t| t.is_none()).await;

    let metrics = request(&daemon.socket, http::Method::GET, "/metrics").await.unwrap().text();
    assert_contains(&metrics, &["connd_file_renders_total{result=\"written\"}", "connd_files_failing 0"]);
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn serve_rewrites_a_token_file_when_the_token_is_renewed() {
    let idp = OidcProvider::start(&[Client::basic("portal", "portal-s3cr3t", "read")], 3);
    let fx = Fixture::with(
        &component_yaml(&[("hr-connection", "thirdparty:svc/v1")]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "portal", "portal-s3cr3t", "basic"),
    )
    .file(
        "token.yaml",
        "kind: File\npath: /run/secrets/token\nformat: template\nmode: \"0400\"\ntemplate: \"{{ connections['hr-connection'].AccessToken }}\"\n",
    );
    let root = tempfile::tempdir().unwrap();
    // No refresh rounds: only the token cache's renewal can bring a new token.
    let daemon = Daemon::start(
        fx.path(),
        &["--files-root", &root.path().display().to_string(), "--refresh-interval", "3600s"],
        &[],
    );
    daemon.ready().await;
    let file = root.path().join("run/secrets/token");
    let first = file_until(&file, "was rendered", |t| t.is_some_and(|t| t.len() == 43)).await.unwrap();
    let written = Instant::now();
    // Renewal is due at 75-85% of the 3s lifetime; the file follows before expiry.
    let second =
        file_until(&file, "followed the renewal", |t| t.is_some_and(|t| t.len() == 43 && t != first)).await.unwrap();
    assert!(written.elapsed() < Duration::from_secs(3), "rewritten only after the old token expired");
    assert!(idp.token_requests() >= 2);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o400);
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(&first) && !stderr.contains(&second), "a token leaked into the log:\n{stderr}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok =
            Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"]).arg(dir.path()).status();
        ok.is_ok_and(|s| s.success()).then_some(Tmpfs(dir))
    }

    fn remount(&self, opt: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{opt}")]).arg(self.0.path()).status().unwrap();
        assert!(status.success(), "remount {opt}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn a_read_only_target_keeps_the_last_good_file_is_counted_and_retried() {
    let Some(fs) = Tmpfs::mount() else {
        panic!("cannot mount a tmpfs: this test needs root (CI runs as root)");
    };
    let conns = IDENTITY.to_owned() + &connection(DB, "orders-db", &[("HostName", "db1")]);
    let mut dir = AtomicDir::new(&[("component.yaml", &files_component("info")), ("c.yaml", &conns)]);
    let daemon = Daemon::start(dir.path(), &["--files-root", &fs.0.path().display().to_string()], &[]);
    daemon.ready().await;
    let app = fs.0.path().join("conf/app.json");
    file_until(&app, "was rendered", |t| t.is_some_and(|t| t.contains("\"db1\""))).await;

    fs.remount("ro");
    let conns2 = IDENTITY.to_owned() + &connection(DB, "orders-db", &[("HostName", "db2")]);
    dir.update(&[("component.yaml", &files_component("info")), ("c.yaml", &conns2)]);
    let start = Instant::now();
    let metrics = loop {
        let text = request(&daemon.socket, http::Method::GET, "/metrics").await.unwrap().text();
        if text.contains("connd_files_failing 1") {
            break text;
        }
        assert!(start.elapsed() < PATIENCE, "the failure was never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!metrics.contains("connd_file_renders_total{result=\"error\"} 0"), "{metrics}");
    assert!(std::fs::read_to_string(&app).unwrap().contains("\"db1\""), "the last good file stays");
    // Still serving.
    let env = request(&daemon.socket, http::Method::GET, "/v1/env").await.unwrap();
    assert!(env.text().contains("db2"), "{}", env.text());

    fs.remount("rw");
    file_until(&app, "was written once the folder was writable", |t| t.is_some_and(|t| t.contains("\"db2\""))).await;
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["Read-only file system", "the last good file stays, will retry", "file written again"]);
}

#[test]
fn run_signals_the_workload_when_only_a_file_changes() {
    let conns = IDENTITY.to_owned() + &connection(DB, "orders-db", &[("HostName", "db1")]);
    let mut dir = AtomicDir::new(&[("component.yaml", &files_component("info")), ("c.yaml", &conns)]);
    let root = tempfile::tempdir().unwrap();
    let hups = root.path().join("hups");
    let script = format!(
        "trap 'echo hup >> {h}' HUP; cat {r}/conf/app.json > {r}/seen; while :; do sleep 0.05; done",
        h = hups.display(),
        r = root.path().display()
    );
    let mut child = connd()
        .args(["run", "--config-dir"])
        .arg(dir.path())
        .args([
            "--files-root",
            &root.path().display().to_string(),
            "--on-file-change",
            "signal:SIGHUP",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // The file was there before the workload started.
    while !std::fs::read_to_string(root.path().join("seen")).is_ok_and(|t| t.contains("db1")) {
        assert!(start.elapsed() < PATIENCE, "the workload never read the file");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A change that touches only the file (`level` is in no variable): SIGHUP.
    dir.update(&[("component.yaml", &files_component("debug")), ("c.yaml", &conns)]);
    while !std::fs::read_to_string(&hups).is_ok_and(|t| t.contains("hup")) {
        assert!(start.elapsed() < PATIENCE, "the workload never got SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::fs::read_to_string(root.path().join("conf/app.json")).unwrap().contains("debug"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let _ = child.wait();
}

#[test]
fn an_owner_is_refused_when_connd_is_not_root() {
    let fx = Fixture::with(
        &component_yaml(&[("orders-db", "database:pg/orders")]),
        &connection(DB, "orders-db", &[("HostName", "db")]),
    )
    .file("f.yaml", "kind: File\npath: /f\nformat: json\nowner: \"0\"\ngroup: root\nvalues: []\n");
    // Readable by the unprivileged user the check runs as.
    std::fs::set_permissions(fx.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(fx.path()).unwrap() {
        std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out: Run = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", connd_bin(), "check", "--config-dir"])
        .arg(fx.path())
        .env_clear()
        .output()
        .expect("setpriv runs")
        .into();
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "f.yaml:4: `owner` is set, but connd does not run as root",
            "f.yaml:5: `group` is set, but connd does not run as root",
        ],
    );
}

#[test]
fn a_full_file_system_keeps_the_old_file_and_leaves_no_temporary_file() {
    let Some(fs) = Tmpfs::mount() else {
        panic!("cannot mount a tmpfs: this test needs root (CI runs as root)");
    };
    let big = |n: usize| {
        let fx = Fixture::with(
            &component_yaml(&[("orders-db", "database:pg/orders")]),
            &connection(DB, "orders-db", &[("HostName", "db")]),
        );
        fx.file("f.yaml", &format!("kind: File\npath: /big.txt\nformat: template\ntemplate: \"{{% for i in range({n}) %}}0123456789{{% endfor %}}\"\n"))
    };
    let root = fs.0.path().display().to_string();
    let out = big(1000).run("render", &["--files-root", &root]);
    assert_eq!(out.code, 0, "{out:?}");
    // The tmpfs holds 1 MiB: with the filler, 200,000 new bytes cannot fit.
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![b'x'; 900 * 1024]).unwrap();
    let out = big(20_000).run("render", &["--files-root", &root]);
    assert_eq!(out.code, 73, "{out:?}");
    assert_contains(&out.stderr, &["cannot write", "big.txt", "No space left on device"]);
    assert_eq!(out.stderr.matches("No space left").count(), 1, "the cause said once: {}", out.stderr);
    assert_eq!(std::fs::read_to_string(fs.0.path().join("big.txt")).unwrap().len(), 10_000, "the old file stays");
    let names: Vec<String> = std::fs::read_dir(fs.0.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
}

#[test]
fn a_missing_files_root_is_created() {
    let fx = fixture_with_file("json", &[("a".into(), "1".into())]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("not/yet");
    let out = fx.run("render", &["--files-root", &root.display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(root.join("out/file.json").is_file());
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_misspelled_template_variable_or_format_names_the_one_meant() {
    let comp = component_yaml(&[("orders-db", "database:pg/orders")])
        + "configurations:\n  env:\n    - name: LOG_LEVEL\n      value: debug\n";
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().display().to_string();
    let fx = Fixture::with(&comp, &connection(DB, "orders-db", &[("HostName", "db")]))
        .file("a.yaml", "kind: File\npath: /a\nformat: template\ntemplate: |\n  {{ env.LOGLEVEL }}\n");
    let out = fx.run("render", &["--files-root", &root_arg]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &["the component has no variable \"LOGLEVEL\" (did you mean `LOG_LEVEL`?) (its variables: ", "LOG_LEVEL"],
    );

    let fx = Fixture::with(&comp, &connection(DB, "orders-db", &[("HostName", "db")]))
        .file("b.yaml", "kind: File\npath: /b\nformat: propertys\nvalues: []\n");
    let out = fx.run("check", &["--files-root", &root_arg]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["unknown file format \"propertys\" (did you mean `properties`?)"]);
}

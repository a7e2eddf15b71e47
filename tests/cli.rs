//! `check`, `env` and `exec` of the real binary on valid directories: variable names,
//! output formats, settings from flags and `CONND_*`, and exec's process semantics.

use crate::support::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example");
const HR_REF: &str = "service:/HRProject/users/v1/ad088/PUBLIC";
const ID1: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const ID2: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";

fn env_json(f: &Fixture, args: &[&str]) -> BTreeMap<String, String> {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = f.run("env", &all);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn check_prints_the_plan_with_secrets_redacted() {
    let out = run(&["check", "--config-dir", EXAMPLE]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stdout,
        &[
            "component user-portal in project hr-project",
            "CHOREO_HR_SERVICE_SERVICEURL",
            "https://hr.internal.example/users/v1",
            "CHOREO_HR_SERVICE_CONSUMERSECRET",
            "<redacted>",
            "ok: 4 connections, 14 variables",
        ],
    );
    for secret in ["s3cr3t-portal-oauth", "pg-portal-example-pw", "maps-key-example-1234", "inv-7d1e0c"] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{secret} leaked:\n{out:?}");
    }
}

#[test]
fn the_example_resolves_every_kind_of_mapping() {
    let out = run(&["env", "--config-dir", EXAMPLE, "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env: BTreeMap<String, String> = serde_json::from_str(&out.stdout).unwrap();
    // Default names, a file source with its newline trimmed, a rename, a legacy mapping, a literal.
    assert_eq!(env["CHOREO_HR_SERVICE_SERVICEURL"], "https://hr.internal.example/users/v1");
    assert_eq!(env["CHOREO_MAPS_API_CHOREOAPIKEY"], "maps-key-example-1234");
    assert_eq!(env["DATABASE_PASSWORD"], "pg-portal-example-pw");
    assert!(!env.contains_key("CHOREO_PORTAL_DB_PASSWORD"), "a rename unsets the default name");
    assert_eq!(env["INVENTORY_URL"], "http://inventory.hr-project.svc.cluster.local:8080");
    assert!(!env.keys().any(|k| k.starts_with("CHOREO_INVENTORY")), "legacy references inject only mapped keys");
    assert_eq!(env["LOG_LEVEL"], "info");
    assert_eq!(env["CHOREO_PORTAL_DB_PORT"], "5432");
    assert!(!env.contains_key("CHOREO_HR_SERVICE_ACCESSTOKEN"), "AccessToken only where a mapping names it");
    assert_eq!(env.len(), 14);
}

#[test]
fn prefix_and_normalisation() {
    let comp = component_yaml(&[("Hr Service--v2", HR_REF)]);
    let f = Fixture::with(&comp, &connection(ID1, "Hr Service--v2", &[("Service.URL", "u")]));
    assert_eq!(env_json(&f, &[]).keys().collect::<Vec<_>>(), ["CHOREO_HR_SERVICE_V2_SERVICE_URL"]);
    assert_eq!(
        env_json(&f, &["--env-prefix", "my-app"]).keys().collect::<Vec<_>>(),
        ["MY_APP_HR_SERVICE_V2_SERVICE_URL"]
    );
    assert_eq!(env_json(&f, &["--env-prefix", ""]).keys().collect::<Vec<_>>(), ["HR_SERVICE_V2_SERVICE_URL"]);
}

#[test]
fn schema_versions_and_the_older_configuration_spelling() {
    for version in ["1.0", "1.1", "\"1.2\""] {
        let comp = component_yaml(&[("hr-service", HR_REF)]).replace("1.2", version)
            + "configuration:\n  env:\n    - name: PORT\n      value: 8080\n";
        let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "u")]));
        let env = env_json(&f, &[]);
        assert_eq!(env["PORT"], "8080", "schemaVersion {version}");
    }
}

#[test]
fn env_formats_round_trip_awkward_values() {
    let awkward = "it's \"quoted\" $HOME `id` \\ back\nslash ünï 🙂";
    let f = Fixture::with(
        &component_yaml(&[("hr-service", HR_REF)]),
        &connection(ID1, "hr-service", &[("Value", "{ file: v }")]),
    )
    .file("v", &format!("{awkward}\n"));
    assert_eq!(env_json(&f, &[])["CHOREO_HR_SERVICE_VALUE"], awkward);

    // `eval "$(connd env --format shell)"` gives back the value byte for byte.
    let shell = f.run("env", &["--format", "shell"]);
    assert_eq!(shell.code, 0, "{shell:?}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("eval \"$CONND_OUT\"; printf %s \"$CHOREO_HR_SERVICE_VALUE\"")
        .env("CONND_OUT", &shell.stdout)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), awkward);

    let dotenv = f.run("env", &[]);
    assert_eq!(dotenv.code, 0, "{dotenv:?}");
    // Double quotes (the value holds a quote, a backslash and a line break), with only
    // `\\` and `\"` escaped: the escapes systemd's EnvironmentFile= and python-dotenv both
    // decode (`tests/dotenv_readers.rs` reads it back); the line break stays a line break.
    assert_eq!(dotenv.stdout, "CHOREO_HR_SERVICE_VALUE=\"it's \\\"quoted\\\" $HOME `id` \\\\ back\nslash ünï 🙂\"\n");
}

#[test]
fn settings_come_from_connd_variables_and_flags_win() {
    let f = Fixture::with(
        &component_yaml(&[("hr-service", HR_REF)]),
        &connection(ID1, "hr-service", &[("ServiceURL", "u")]),
    );
    let out: Run = connd()
        .args(["env", "--format", "json"])
        .env("CONND_CONFIG_DIR", f.path())
        .env("CONND_ENV_PREFIX", "FROM_ENV")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["FROM_ENV_HR_SERVICE_SERVICEURL"]);
    let out: Run = connd()
        .args(["env", "--format", "json", "--env-prefix", "FROM_FLAG"])
        .env("CONND_CONFIG_DIR", f.path())
        .env("CONND_ENV_PREFIX", "FROM_ENV")
        .output()
        .unwrap()
        .into();
    assert_contains(&out.stdout, &["FROM_FLAG_HR_SERVICE_SERVICEURL"]);
}

#[test]
fn project_and_component_flags_override_the_identity_document() {
    let c = format!("kind: Connection\nid: {ID1}\nname: hr-service\nproject: other\nvisibility: component\ncomponent: worker\nparameters:\n  K: v\n");
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &c);
    assert_eq!(f.run("check", &[]).code, 78);
    let out = f.run("check", &["--project", "other", "--component", "worker"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["component worker in project other"]);
}

#[test]
fn a_kubelet_configmap_layout_is_read_through_its_symlinks() {
    let f = Fixture::new()
        .file("..2026_11_22_03_00_00.1/component.yaml", &component_yaml(&[("hr-service", HR_REF)]))
        .file("..2026_11_22_03_00_00.1/identity.yaml", IDENTITY)
        .file(
            "..2026_11_22_03_00_00.1/connections.yaml",
            &connection(ID1, "hr-service", &[("ServiceURL", "from-configmap")]),
        );
    std::os::unix::fs::symlink("..2026_11_22_03_00_00.1", f.join("..data")).unwrap();
    for name in ["component.yaml", "identity.yaml", "connections.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), f.join(name)).unwrap();
    }
    assert_eq!(env_json(&f, &[])["CHOREO_HR_SERVICE_SERVICEURL"], "from-configmap");
}

#[test]
fn hidden_and_non_yaml_files_are_ignored() {
    let f = Fixture::with(
        &component_yaml(&[("hr-service", HR_REF)]),
        &connection(ID1, "hr-service", &[("ServiceURL", "u")]),
    )
    .file(".draft.yaml", "not: [valid")
    .file("README.txt", "notes")
    .file("more.yml", &connection(ID2, "unused-connection", &[("X", "y")]));
    assert_eq!(env_json(&f, &[]).len(), 1);
}

#[test]
fn usage_errors_exit_64() {
    let out = run(&["env", "--format", "xml"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert_contains(&out.stderr, &["invalid value 'xml'"]);
    assert_eq!(run(&["exec"]).code, 64);
    assert_eq!(run(&["frobnicate"]).code, 64);
    assert_eq!(run(&["--help"]).code, 0);
}

#[test]
fn errors_as_json_log_lines() {
    let out = run(&["check", "--config-dir", "/nonexistent/connd", "--log-format", "json"]);
    assert_eq!(out.code, 78);
    let line: serde_json::Value = serde_json::from_str(out.stderr.lines().next().unwrap()).unwrap();
    assert_eq!(line["level"], "ERROR");
    assert!(line["message"].as_str().unwrap().contains("cannot read the config directory"), "{out:?}");
}

// ---- exec ----

fn example_exec() -> std::process::Command {
    let mut cmd = connd();
    cmd.args(["exec", "--config-dir", EXAMPLE, "--"]);
    cmd
}

#[test]
fn exec_passes_argv_intact() {
    let args = ["a b", "it's", "\"q\"", "", "--flag", "-x", "$HOME", "ü"];
    let out: Run = example_exec()
        .args(["sh", "-c", "for a in \"$@\"; do printf '[%s]' \"$a\"; done", "sh"])
        .args(args)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "[a b][it's][\"q\"][][--flag][-x][$HOME][ü]");
}

#[test]
fn exec_passes_stdin_and_stdout_through_and_returns_the_exit_code() {
    let mut child = example_exec()
        .args(["sh", "-c", "tr a-z A-Z; exit 3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello through connd\n").unwrap();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.stdout, "HELLO THROUGH CONND\n");
    assert_eq!(out.code, 3);
}

#[test]
fn exec_keeps_the_pid() {
    let child = example_exec().args(["sh", "-c", "echo $$"]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
}

#[test]
fn exec_environment_overrides_inherited_and_drops_settings() {
    let out: Run = example_exec()
        .args(["env"])
        .env("LOG_LEVEL", "inherited")
        .env("KEEP_ME", "yes")
        .env("CONND_LOG_LEVEL", "warn")
        .env("CONND_ANYTHING", "x")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.contains(&"LOG_LEVEL=info"), "{out:?}");
    assert!(!lines.contains(&"LOG_LEVEL=inherited"), "{out:?}");
    assert!(lines.contains(&"KEEP_ME=yes"), "{out:?}");
    assert!(lines.contains(&"DATABASE_PASSWORD=pg-portal-example-pw"), "{out:?}");
    assert!(!out.stdout.contains("CONND_"), "{out:?}");
}

#[test]
fn exec_reports_127_and_126() {
    let out: Run = example_exec().arg("no-such-command-anywhere").output().unwrap().into();
    assert_eq!(out.code, 127, "{out:?}");
    assert_contains(&out.stderr, &["cannot run \"no-such-command-anywhere\": not found in PATH"]);

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out: Run = example_exec().arg(&script).output().unwrap().into();
    assert_eq!(out.code, 126, "{out:?}");
    assert_contains(&out.stderr, &["not-executable.sh", "is not executable"]);

    let out: Run = example_exec().arg(dir.path()).output().unwrap().into();
    assert_eq!(out.code, 126, "{out:?}");
    assert_contains(&out.stderr, &["is a directory"]);
}

#[test]
fn exec_searches_the_path_the_workload_gets() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("my-tool");
    std::fs::write(&tool, "#!/bin/sh\necho found-by-path\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let out: Run = example_exec().arg("my-tool").env("PATH", path).output().unwrap().into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "found-by-path\n");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let bash = run(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{bash:?}");
    assert_contains(&bash.stdout, &["exec", "--config-dir", "--format"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("connd.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));

    let out = run(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let main = std::fs::read_to_string(dir.path().join("connd.1")).unwrap();
    assert_contains(&main, &[".TH connd 1", "check", "exec"]);
    let exec = std::fs::read_to_string(dir.path().join("connd-exec.1")).unwrap();
    assert_contains(&exec, &["connd\\-exec", "CONND_CONFIG_DIR"]);
    // The synopsis reads as typed; every page carries the exit codes and the reference.
    let synopsis = exec.split(".SH SYNOPSIS").nth(1).unwrap_or("").lines().nth(1).unwrap_or("");
    assert!(synopsis.starts_with("\\fBconnd exec\\fR"), "{synopsis}");
    for page in [&main, &exec] {
        assert_contains(
            page,
            &[".SH \"EXIT STATUS\"", "\\fB78\\fR", "\\fB127\\fR", ".SH \"SEE ALSO\"", "docs/config.md"],
        );
    }
    let printed = run(&["man"]);
    assert_contains(&printed.stdout, &[".SH \"EXIT STATUS\"", "docs/config.md"]);
}

#[test]
fn check_redacts_secret_looking_literals_and_escapes_control_characters() {
    let comp = component_yaml(&[("hr-service", HR_REF)])
        + "configurations:\n  env:\n    - name: DB_PASSWORD\n      value: lit3ral-pw\n    - name: BANNER\n      value: \"a\\x1b[31mred\\nline\"\n";
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("client_secret", "cs-value"), ("ServiceURL", "u")]));
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("lit3ral-pw") && !out.stdout.contains("cs-value"), "{out:?}");
    assert_contains(&out.stdout, &["DB_PASSWORD", "CHOREO_HR_SERVICE_CLIENT_SECRET", "a\\u{1b}[31mred\\nline"]);
    assert!(!out.stdout.contains('\u{1b}'), "{out:?}");
}

#[test]
fn both_identity_flags_make_identity_documents_irrelevant() {
    let f = Fixture::with(
        &component_yaml(&[("hr-service", HR_REF)]),
        &connection(ID1, "hr-service", &[("ServiceURL", "u")]),
    )
    .file("second-identity.yaml", "kind: Component\nproject: hr-project\nname: other\n");
    assert_eq!(f.run("check", &[]).code, 78);
    let out = f.run("check", &["--project", "hr-project", "--component", "user-portal"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn the_command_argument_has_its_own_heading_in_help() {
    for sub in ["exec", "run"] {
        let out = run(&[sub, "--help"]);
        assert_eq!(out.code, 0, "{out:?}");
        let (before, _) = out.stdout.split_once("<CMD>...  ").unwrap_or_else(|| panic!("{sub}: {}", out.stdout));
        let heading = before.lines().rev().find(|l| l.ends_with(':') && !l.starts_with(' ')).unwrap();
        assert_eq!(heading, "Arguments:", "{sub} --help:\n{}", out.stdout);
    }
}

/// A `CONND_*` variable one edit (or a case) away from one connd reads is a warning naming
/// the variable meant, never silently ignored; its value is not shown.
#[test]
fn a_misspelled_connd_variable_is_a_warning_naming_the_one_meant() {
    for (typo, meant) in [("CONND_CONFIG_DIRR", "CONND_CONFIG_DIR"), ("connd_env_prefix", "CONND_ENV_PREFIX")] {
        let out: Run = connd()
            .args(["check", "--config-dir", EXAMPLE])
            .env(typo, "hunter2-value")
            .output()
            .expect("connd runs")
            .into();
        assert_eq!(out.code, 0, "{out:?}");
        assert_contains(
            &out.stderr,
            &[&format!("{typo} is not a variable connd reads, and is ignored: did you mean {meant}?")],
        );
        assert!(!out.stderr.contains("hunter2-value"), "{out:?}");
    }
}

#[test]
fn check_counts_one_connection_in_the_singular() {
    let comp = component_yaml(&[("hr-service", HR_REF)]);
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["ok: 1 connection, 1 variable\n"]);
}

/// A mistyped flag before `--` is a usage error with clap's tip, for every command that
/// takes `-- CMD`; it never becomes the command connd runs (issue: "cannot run
/// --stop-timout: not found in PATH").
#[test]
fn a_mistyped_flag_before_the_command_is_a_usage_error_with_the_flag_meant() {
    let dir = EXAMPLE.to_owned();
    for (sub, typo, meant) in [
        ("run", "--stop-timout", "--stop-timeout"),
        ("exec", "--config-dri", "--config-dir"),
        ("run", "--config-dri", "--config-dir"),
    ] {
        let out = run(&[sub, "--config-dir", &dir, typo, "5s", "--", "true"]);
        assert_eq!(out.code, 64, "{sub} {typo}: {out:?}");
        assert_contains(
            &out.stderr,
            &[&format!("unexpected argument '{typo}'"), &format!("a similar argument exists: '{meant}'")],
        );
        assert!(!out.stderr.contains("not found in PATH"), "{out:?}");
    }
    // After `--` everything is the command's, flags included; and a command named without
    // `--` keeps its own flags.
    let out = run(&["exec", "--config-dir", &dir, "--", "sh", "-c", "echo --stop-timout"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "--stop-timout\n"), "{out:?}");
    let out = run(&["exec", "--config-dir", &dir, "sh", "-c", "echo ok"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out:?}");
}

/// A listener that cannot bind says its cause once, not two or three times.
#[test]
fn a_bind_error_says_its_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let socket = tempfile::tempdir().unwrap();
    let socket = socket.path().join("connd.sock").display().to_string();
    for flag in ["--proxy-listen", "--metrics-listen"] {
        let out = run(&["serve", "--config-dir", EXAMPLE, "--socket", &socket, flag, &addr]);
        assert_eq!(out.code, 73, "{out:?}");
        assert_eq!(out.stderr.matches("Address already in use").count(), 1, "{flag}: {}", out.stderr);
    }
}

/// A directory (and a files root) whose path is not UTF-8, with a file the plan renders:
/// `check --format json` writes the file's paths with U+FFFD, as the text output does,
/// where it used to abort.
#[test]
fn check_json_writes_the_paths_of_a_rendered_file_that_are_not_utf8_as_unicode() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"conf\xffig"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("component.yaml"),
        "schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n    - name: cone\n      resourceRef: storage:x\n\
         configurations:\n  file:\n    - name: c.toml\n      mountPath: /etc/app\n      type: toml\n      values:\n\
         \x20       - name: a.b\n          valueFrom: { connectionRef: { name: cone, key: Key } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("conns.yaml"),
        "kind: Component\nproject: p1\nname: comp\n---\nkind: Connection\nid: 0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40\n\
         name: cone\nproject: p1\nparameters:\n  Key: v\n",
    )
    .unwrap();
    let root = tmp.path().join(std::ffi::OsStr::from_bytes(b"ro\xffot"));
    let out =
        connd().args(["check", "--format", "json", "--config-dir"]).arg(&dir).arg("--files-root").arg(&root).output();
    let out: Run = out.unwrap().into();
    assert_eq!(out.code, 0, "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let file = &plan["files"][0];
    assert!(file["file"].as_str().unwrap().ends_with("conf\u{FFFD}ig/component.yaml"), "{file}");
    assert!(file["target"].as_str().unwrap().contains("ro\u{FFFD}ot/etc/app/c.toml"), "{file}");
    assert_eq!(file["values"][0]["value"], "v", "{file}");
}

/// Several descriptor names equally near a misspelled reference: the message names the
/// first of them in byte order, the same at every run (it once followed a hash map's order).
#[test]
fn equally_near_names_suggest_the_same_one_at_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("component.yaml"),
        "schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n    - name: conn-x\n      resourceRef: storage:x\n",
    )
    .unwrap();
    let mut docs = String::from("kind: Component\nproject: p1\nname: comp\n");
    for (i, name) in ["conn-e", "conn-c", "conn-a", "conn-f", "conn-b", "conn-d"].iter().enumerate() {
        docs.push_str(&format!(
            "---\nkind: Connection\nid: 0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d4{i}\nname: {name}\nproject: p1\nparameters:\n  K: v\n"
        ));
    }
    std::fs::write(dir.join("conns.yaml"), docs).unwrap();
    for _ in 0..8 {
        let out = run(&["check", "--config-dir", dir.to_str().unwrap()]);
        assert_eq!(out.code, 78, "{out:?}");
        assert!(
            out.stderr.contains("no connection descriptor named \"conn-x\" (did you mean `conn-a`?)"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn check_json_writes_a_directory_that_is_not_utf8_as_unicode() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"conf\xffig"));
    let copied = std::process::Command::new("cp").arg("-r").arg(EXAMPLE).arg(&dir).status().unwrap();
    assert!(copied.success());
    let out = connd().args(["check", "--format", "json", "--config-dir"]).arg(&dir).output().unwrap();
    let out: Run = out.into();
    assert_eq!(out.code, 0, "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let shown = plan["dir"].as_str().unwrap();
    assert!(shown.ends_with("conf\u{FFFD}ig"), "{shown}");
    assert_eq!(plan["variables"].as_array().unwrap().len(), 14, "{out:?}");
}

//! Config messages that are right, complete and suggest (docs/config.md, docs/commands.md `check`): no
//! follow-on error on a correct line, every problem at once, typo warnings, the nearest
//! name, and `check` that contacts nothing and speaks JSON.

use crate::support::*;

const HR_REF: &str = "service:/HRProject/users/v1/ad088/PUBLIC";
const ID1: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const ID2: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";

/// `check` exits 78 and stderr holds every needle and none of the `absent` texts.
#[track_caller]
fn config_error(f: &Fixture, needles: &[&str], absent: &[&str]) -> Run {
    let out = f.run("check", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, needles);
    for text in absent {
        assert!(!out.stderr.contains(text), "unexpected {text:?} in:\n{}", out.stderr);
    }
    out
}

#[test]
fn a_misspelled_descriptor_field_blames_only_the_descriptor() {
    let comp = component_yaml(&[("hr-service", HR_REF)])
        + "configurations:\n  env:\n    - name: HR_URL\n      valueFrom:\n        connectionRef: {name: hr-service, key: ServiceURL}\n";
    // A number too large for YAML's integers must not hide the descriptor's name either.
    let params = [("ServiceURL", "https://hr"), ("AccountId", "18446744073709551616")];
    let conn = connection(ID1, "hr-service", &params).replace("visibility:", "visiblity:");
    let f = Fixture::with(&comp, &conn);
    config_error(
        &f,
        &["(1 error)", "connections.yaml:6: unknown field `visiblity`", "did you mean `visibility`?"],
        &["is not in dependencies.connectionReferences", "no connection descriptor named", "component.yaml:"],
    );
}

#[test]
fn a_broken_descriptor_found_by_id_is_not_reported_twice() {
    let comp = "schemaVersion: 1.2\ndependencies:\n  serviceReferences:\n    - name: hr\n      connectionConfig: 19d2648b-d29c-4452-afdd-1b9311e81412\n      env:\n        - {from: ServiceURL, to: HR_URL}\n";
    let conn = connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]) + "colour: blue\n";
    let f = Fixture::with(comp, &conn);
    config_error(&f, &["(1 error)", "unknown field `colour`"], &["which has no descriptor"]);
}

#[test]
fn missing_file_sources_are_reported_with_the_rest() {
    let comp = component_yaml(&[("hr-service", HR_REF)]);
    let conn =
        connection(ID1, "hr-service", &[("ApiKey", "{ file: missing-key }"), ("Cert", "{ file: missing-cert }")])
            + &connection("not-a-uuid", "other-service", &[]);
    let f = Fixture::with(&comp, &conn);
    config_error(
        &f,
        &[
            "(3 errors)",
            "connections.yaml:8: cannot read ApiKey of connection \"hr-service\" from",
            "connections.yaml:9: cannot read Cert of connection \"hr-service\" from",
            "missing-cert: No such file",
            "fix: create the file (a relative path is taken from the config directory)",
            "is not a UUID",
        ],
        &[],
    );
}

#[test]
fn keys_one_edit_away_are_warnings_naming_the_key_meant() {
    let comp = "schemaVersion: 1.2\ndependancies:\n  connectionReferences:\n    - name: hr-service\n      resourceRef: service:/HRProject/users/v1/ad088/PUBLIC\n";
    let f = Fixture::with(comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "a warning does not fail the check: {out:?}");
    assert_contains(
        &out.stderr,
        &["component.yaml:2: `dependancies` is not a key connd reads, and is ignored: did you mean `dependencies`?"],
    );

    let comp = component_yaml(&[("hr-service", HR_REF)])
        + "configurations:\n  envs:\n    - name: HR_URL\n      valueFrom:\n        connectionRef: {name: hr-service, key: ServiceURL}\n";
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    let out = f.run("env", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stderr,
        &["component.yaml:7: `envs` under `configurations` is not a key connd reads", "did you mean `env`?"],
    );
    let json = f.run("check", &["--format", "json"]);
    assert_contains(&json.stdout, &["\"warnings\"", "did you mean `env`?"]);
}

/// A typo in a field connd requires is said as a typo, not only as the field missing; and
/// the same typo twice is warned at each of its lines.
#[test]
fn a_typo_of_a_required_key_names_the_key_meant() {
    let comp = "schemaVersion: 1.2\ndependencies:\n  serviceReferences:\n    - name: hr\n      connectionConfg: 19d2648b-d29c-4452-afdd-1b9311e81412\n      env:\n        - {from: ServiceURL, to: HR_URL}\n";
    let f = Fixture::with(comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    config_error(
        &f,
        &[
            "missing field `connectionConfig`",
            "component.yaml:5: `connectionConfg` under `dependencies.serviceReferences` is not a key connd reads",
            "did you mean `connectionConfig`?",
        ],
        &[],
    );

    let comp = "schemaVersion: 1.2\ndependencies:\n  serviceReferences:\n    - name: hr\n      connectionConfig: 19d2648b-d29c-4452-afdd-1b9311e81412\n      envs:\n        - {from: ServiceURL, to: HR_URL}\nconfigurations:\n  envs:\n    - {name: A, value: b}\n";
    let f = Fixture::with(comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    let out = f.run("check", &[]);
    assert_contains(
        &out.stderr,
        &[
            "component.yaml:6: `envs` under `dependencies.serviceReferences` is not a key connd reads",
            "component.yaml:9: `envs` under `configurations` is not a key connd reads",
        ],
    );
}

#[test]
fn unknown_names_get_the_nearest_known_one() {
    let comp = component_yaml(&[("inventory-servce", HR_REF), ("hr-service", HR_REF)])
        + "configurations:\n  env:\n    - name: HR_URL\n      valueFrom:\n        connectionRef: {name: hr-service, key: ServiceUrl}\n    - name: X\n      valueFrom:\n        connectionRef: {name: hr-servce, key: ServiceURL}\n";
    let conns = connection(ID1, "inventory-service", &[("ServiceURL", "https://inv")])
        + &connection(ID2, "hr-service", &[("ServiceURL", "https://hr")])
        + "---\nkind: Conection\n";
    let f = Fixture::with(&comp, &conns);
    config_error(
        &f,
        &[
            "no connection descriptor named \"inventory-servce\" (did you mean `inventory-service`?)",
            "which has no such key (did you mean `ServiceURL`?)",
            "which is not in dependencies.connectionReferences (did you mean `hr-service`?)",
            "unknown kind \"Conection\" (did you mean `Connection`?)",
        ],
        &[],
    );
}

#[test]
fn a_tab_in_the_indentation_says_tab() {
    let conn = connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]).replace("  ServiceURL", "\tServiceURL");
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    config_error(
        &f,
        &[
            "connections.yaml:8: a tab in the indentation: YAML indents with spaces only",
            "fix: replace the tab with spaces",
        ],
        &["cannot start any token", "no connection descriptor named"],
    );
}

#[test]
fn a_parameter_indented_out_of_parameters_may_belong_under_them() {
    let conn = connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]) + "HostName: db.internal\n";
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    config_error(&f, &["unknown field `HostName`", "it may belong under `parameters`"], &[]);
}

#[test]
fn component_yml_says_component_yaml() {
    let f = Fixture::new()
        .file("component.yml", &component_yaml(&[("hr-service", HR_REF)]))
        .file("identity.yaml", IDENTITY)
        .file("connections.yaml", &connection(ID1, "hr-service", &[]));
    config_error(
        &f,
        &["(1 error)", "component.yml: connd reads the component's config from component.yaml, not component.yml"],
        &["no kind", "has no component.yaml"],
    );
}

/// Near names of component.yaml (a case, a letter) are taken for it, not for documents
/// without a kind; a near name that holds kinds is read as connd's own file.
#[test]
fn near_names_of_component_yaml_say_component_yaml() {
    for name in ["Component.yaml", "componet.yaml", "Component.yml"] {
        let f = Fixture::new()
            .file(name, &component_yaml(&[("hr-service", HR_REF)]))
            .file("identity.yaml", IDENTITY)
            .file("connections.yaml", &connection(ID1, "hr-service", &[]));
        config_error(
            &f,
            &["(1 error)", &format!("{name}: connd reads the component's config from component.yaml, not {name}")],
            &["no `kind`", "has no component.yaml"],
        );
    }
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &connection(ID1, "hr-service", &[("A", "b")]))
        .file("Component.yaml", IDENTITY);
    let out = f.run("check", &[]);
    assert!(!out.stderr.contains("connd reads the component's config"), "{out:?}");
}

/// A literal TokenURL that `env` would refuse is refused by `check` too: `check` says
/// ok only for what resolves.
#[test]
fn check_refuses_a_token_url_that_env_refuses() {
    for (url, words) in [
        ("http://sts.example/token", "refusing plain http:// to \"sts.example\""),
        ("ftp://sts.example/token", "is not an absolute http(s) URL"),
        ("https://sts.example:99999/token", "which is not a port"),
    ] {
        let params = [("TokenURL", url), ("ConsumerKey", "portal"), ("ConsumerSecret", "portal-s3cr3t")];
        let conn = connection(ID1, "hr-service", &params).replace("parameters:", "security: oauth2\nparameters:");
        let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
        let out = config_error(&f, &["connection \"hr-service\": TokenURL:", words], &["portal-s3cr3t"]);
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn an_unreadable_config_dir_is_one_error() {
    let out = run(&["check", "--config-dir", "/nonexistent/connd"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["(1 error)", "cannot read the config directory"]);
    assert!(!out.stderr.contains("does not know which component"), "{out:?}");
}

#[test]
fn check_contacts_nothing_and_shows_remote_values_as_remote() {
    let conn = connection(
        ID1,
        "hr-service",
        &[("ServiceURL", "https://hr"), ("ConsumerKey", "{ remote: true }"), ("Password", "hunter2")],
    );
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stdout,
        &["CHOREO_HR_SERVICE_CONSUMERKEY", "remote", "<remote>", "ok: 1 connection, 3 variables"],
    );

    let out = f.run("check", &["--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("hunter2"), "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("check --format json prints JSON");
    assert_eq!(plan["component"], "user-portal");
    assert_eq!(plan["connections"][0]["name"], "hr-service");
    let var = |name: &str| plan["variables"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
    let key = var("CHOREO_HR_SERVICE_CONSUMERKEY");
    assert_eq!((key["source"].as_str(), key["value"].is_null()), (Some("remote"), true), "{key}");
    let password = var("CHOREO_HR_SERVICE_PASSWORD");
    assert_eq!((password["redacted"].as_bool(), password["value"].is_null()), (Some(true), true), "{password}");
    assert_eq!(var("CHOREO_HR_SERVICE_SERVICEURL")["value"], "https://hr");
}

#[test]
fn a_descriptor_with_its_kind_mistyped_is_reported_once() {
    let conn =
        connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]).replace("kind: Connection", "kind: Conection");
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    config_error(
        &f,
        &["(1 error)", "unknown kind \"Conection\" (did you mean `Connection`?)"],
        &["no connection descriptor named"],
    );
    let conn = connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]).replace("kind: Connection\n", "");
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    config_error(&f, &["(1 error)", "document has no `kind`"], &["no connection descriptor named"]);
}

#[tokio::test]
async fn serve_logs_a_typo_warning_once_not_at_every_reload() {
    use crate::support::daemon::Daemon;
    use nix::sys::signal::Signal;
    let comp =
        component_yaml(&[("hr-service", HR_REF)]) + "configurations:\n  envs:\n    - name: HR_URL\n      value: x\n";
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    let daemon = Daemon::start(f.path(), &[], &[]);
    daemon.ready().await;
    let reloads = || async {
        let text =
            connd::serve::api::client::request(&daemon.socket, http::Method::GET, "/metrics").await.unwrap().text();
        text.lines()
            .filter(|l| l.starts_with("connd_reloads_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = reloads().await;
    daemon.signal(Signal::SIGHUP);
    let start = std::time::Instant::now();
    while reloads().await <= before {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the SIGHUP reload never happened");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("did you mean `env`?").count(), 1, "{stderr}");
    assert_contains(&stderr, &["component.yaml:7: `envs` under `configurations` is not a key connd reads"]);
}

#[test]
fn a_value_written_as_a_flow_map_says_quote_it_and_does_not_echo_it() {
    let conn = connection(ID1, "hr-service", &[("ServiceURL", "https://hr"), ("Password", "{s3cret}")]);
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    config_error(
        &f,
        &["parameters.Password: a value written as a YAML flow map", "fix: quote the value: `Password: \"{...}\"`"],
        &["s3cret", "did you mean", "correct the spelling"],
    );
}

#[test]
fn a_reference_that_failed_is_not_suggested_for_the_name_meant() {
    // The reference is misspelled (`order-db`); the entry uses the descriptor's name.
    let comp = component_yaml(&[("order-db", HR_REF)])
        + "configurations:\n  env:\n    - name: DB\n      valueFrom:\n        connectionRef: {name: orders-db, key: HostName}\n";
    let f = Fixture::with(&comp, &connection(ID1, "orders-db", &[("HostName", "db")]));
    config_error(
        &f,
        &[
            "no connection descriptor named \"order-db\" (did you mean `orders-db`?)",
            "which is not in dependencies.connectionReferences",
        ],
        &["did you mean `order-db`?"],
    );
}

#[test]
fn a_wrong_indent_says_check_the_indentation() {
    let conn = connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]) + "   Port: 5432\n";
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
    config_error(&f, &["fix: check the indentation of this line and the one before"], &[]);
}

/// `connectionRef:` outdented to sit beside an empty `valueFrom:`: the fault is where it
/// sits, not a missing value.
#[test]
fn a_connection_ref_beside_an_empty_value_from_says_where_it_sits() {
    for (block, line) in [
        ("configurations:\n  env:\n    - name: DB\n      valueFrom:\n      connectionRef:\n        name: orders-db\n        key: HostName\n", 8),
        (
            "configurations:\n  file:\n    - name: app.json\n      mountPath: /conf\n      type: json\n      values:\n        - name: db\n          valueFrom:\n          connectionRef: {name: orders-db, key: HostName}\n",
            12,
        ),
    ] {
        let comp = component_yaml(&[("orders-db", HR_REF)]) + block;
        let f = Fixture::with(&comp, &connection(ID1, "orders-db", &[("HostName", "db")]));
        config_error(
            &f,
            &[
                &format!("component.yaml:{line}:"),
                "`connectionRef` sits beside `valueFrom`, not under it, so `valueFrom` is empty",
                "fix: indent `connectionRef:` and the lines under it two more spaces than `valueFrom:`",
            ],
            &["needs exactly one of"],
        );
    }
}

/// A list item outdented from the items before it: the columns, not libyaml's words.
#[test]
fn an_outdented_list_item_names_both_columns() {
    for indent in ["   ", "  ", " "] {
        let comp = component_yaml(&[("orders-db", HR_REF)])
            + "configurations:\n  env:\n    - name: A\n      value: x\n"
            + indent
            + "- name: B\n      value: y\n";
        let f = Fixture::with(&comp, &connection(ID1, "orders-db", &[("HostName", "db")]));
        config_error(
            &f,
            &[
                &format!("component.yaml:10: the list item on line 10 starts at column {}", indent.len() + 1),
                "but the item before it (line 8) at column 5: the items of one list must line up",
                "fix: indent line 10",
            ],
            &["did not find expected", "correct the YAML of this"],
        );
    }
}

/// A `file:` source that exists but is the wrong file is not fixed by creating it.
#[test]
fn a_device_or_oversized_file_source_says_point_at_the_right_file() {
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b'x'; 2 * 1024 * 1024]).unwrap();
    for (path, needles) in [
        ("/dev/zero".to_owned(), ["not a regular file (a device, FIFO or socket)", "connd never reads devices"]),
        (big.path().display().to_string(), ["the file is over 1048576 bytes", "at most 1 MiB"]),
    ] {
        let conn = connection(ID1, "hr-service", &[]) + &format!("  ServiceURL: {{ file: {path} }}\n");
        let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &conn);
        config_error(&f, &needles, &["create the file"]);
    }
}

/// A template written on its `template:` line is located on that line, not the next.
#[test]
fn a_template_on_its_key_line_is_located_there() {
    let f = Fixture::with(
        &component_yaml(&[("hr-service", HR_REF)]),
        &connection(ID1, "hr-service", &[("ServiceURL", "u")]),
    )
    .file("t.yaml", "kind: File\npath: /t\nformat: template\ntemplate: \"{{ connections['hr-service'].Nope }}\"\n")
    .file(
        "u.yaml",
        "kind: File\npath: /u\nformat: template\ntemplate: |-\n  first\n  {{ connections['hr-service'].Nope }}\n",
    );
    let root = tempfile::tempdir().unwrap();
    let out = f.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["t.yaml:4: template of /t", "u.yaml:6: template of /u"]);
}

/// A misspelled `dependencies` leaves nothing to resolve: `check` must not read as a
/// clean pass, and `--strict` (or `CONND_STRICT`) stops every command on it.
#[test]
fn warnings_are_counted_by_check_and_errors_under_strict() {
    let comp = component_yaml(&[("hr-service", HR_REF)]).replace("dependencies:", "dependancies:");
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "u")]));
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["ok, with 1 warning: 0 connections, 0 variables"]);
    assert_contains(&out.stderr, &["`dependancies` is not a key connd reads", "did you mean `dependencies`?"]);

    let out = f.run("check", &["--strict"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["did you mean `dependencies`? (an error under --strict)"]);
    let marker = f.join("started");
    let out: Run = connd()
        .args(["exec", "--config-dir"])
        .arg(f.path())
        .args(["--", "touch"])
        .arg(&marker)
        .env("CONND_STRICT", "1")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 78, "{out:?}");
    assert!(!marker.exists(), "the workload started on a directory --strict refuses");
}

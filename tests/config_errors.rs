//! One invalid directory per config error: exit 78, and the message a user reads names
//! the file, the line and the fix. Bad input never hangs, panics or starts anything.

use crate::support::*;

const HR_REF: &str = "service:/HRProject/users/v1/ad088/PUBLIC";
const ID1: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const ID2: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";

fn hr_component() -> String {
    component_yaml(&[("hr-service", HR_REF)])
}

/// Runs `check` and asserts exit 78 and that stderr holds every needle.
#[track_caller]
fn expect_config_error(f: &Fixture, needles: &[&str]) -> Run {
    let out = f.run("check", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, needles);
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing is printed on stdout for an invalid directory: {out:?}");
    out
}

#[test]
fn a_missing_directory_is_a_config_error() {
    let out = run(&["check", "--config-dir", "/nonexistent/connd"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["/nonexistent/connd", "cannot read the config directory", "fix: pass --config-dir"]);
}

#[test]
fn an_empty_directory() {
    let f = Fixture::new().file(".hidden.yaml", "kind: Component\n").file("notes.txt", "x");
    expect_config_error(&f, &["holds no YAML files", "fix: mount or write component.yaml"]);
}

#[test]
fn a_directory_without_component_yaml() {
    let f = Fixture::new().file("identity.yaml", IDENTITY);
    expect_config_error(
        &f,
        &["component.yaml: the config directory has no component.yaml", "fix: add the component's component.yaml"],
    );
}

#[test]
fn an_unknown_key_in_a_connection_names_its_line() {
    let mut c = connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]);
    c.push_str("colour: blue\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(
        &f,
        &["connections.yaml:9: unknown field `colour`", "fix: remove the key, or correct its spelling"],
    );
}

#[test]
fn an_unknown_key_in_the_component_document() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[]))
        .file("identity.yaml", "kind: Component\nproject: hr-project\nname: user-portal\nowner: me\n");
    expect_config_error(&f, &["identity.yaml:4: unknown field `owner`"]);
}

#[test]
fn an_unknown_key_in_a_parameter() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ServiceURL", "{ value: x, vault: y }")]));
    // Under `parameters` the field name is not echoed: a mistyped map may hold a value.
    expect_config_error(&f, &["connections.yaml:8: parameters.ServiceURL: unknown field, expected one of `value`, `file`, `remote`, `secret`", "fix: remove the key"]);
}

#[test]
fn duplicate_connection_ids() {
    let both = connection(ID1, "hr-service", &[]) + &connection(ID1, "hr-other", &[]);
    let f = Fixture::with(&hr_component(), &both);
    expect_config_error(
        &f,
        &[
            &format!("duplicate connection id {ID1}"),
            "also used by \"hr-service\"",
            "fix: every connection needs its own UUID",
        ],
    );
}

#[test]
fn a_bad_uuid() {
    let f = Fixture::with(&hr_component(), &connection("19d2648b-d29c-4452-afdd", "hr-service", &[]));
    expect_config_error(
        &f,
        &[
            "connections.yaml:3: connection id \"19d2648b-d29c-4452-afdd\" is not a UUID",
            "fix: use the connection's UUID",
        ],
    );
}

#[test]
fn a_name_outside_the_naming_rule() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr", &[]));
    expect_config_error(
        &f,
        &["connections.yaml:4: connection name \"hr\" breaks the naming rule", "fix: use 3 to 50 characters"],
    );
}

#[test]
fn a_resource_ref_outside_its_grammar() {
    let f = Fixture::with(
        &component_yaml(&[("hr-service", "service:HRProject/users")]),
        &connection(ID1, "hr-service", &[]),
    );
    expect_config_error(
        &f,
        &["component.yaml:5: resourceRef \"service:HRProject/users\" of connection reference \"hr-service\" is not valid", "fix: write it as service:/Project/component/v1/endpoint/PUBLIC"],
    );
    let mut c = connection(ID1, "hr-service", &[]);
    c.push_str("resourceRef: ftp:/x\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(&f, &["connections.yaml:8: resourceRef \"ftp:/x\" is not valid"]);
}

#[test]
fn a_resource_ref_that_differs_from_the_descriptor() {
    let mut c = connection(ID1, "hr-service", &[]);
    c.push_str("resourceRef: service:/HRProject/users/v2/ad088/PUBLIC\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(
        &f,
        &[
            "component.yaml:4: resourceRef mismatch for \"hr-service\"",
            "says service:/HRProject/users/v1/ad088/PUBLIC",
            "says service:/HRProject/users/v2/ad088/PUBLIC",
            "fix: make the reference's resourceRef match",
        ],
    );
}

#[test]
fn a_reference_without_a_descriptor() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "other-service", &[]));
    expect_config_error(
        &f,
        &["component.yaml:4: no connection descriptor named \"hr-service\"", "fix: add a `kind: Connection` document"],
    );
}

#[test]
fn a_component_connection_of_another_component() {
    let c = format!("kind: Connection\nid: {ID1}\nname: hr-service\nproject: hr-project\nvisibility: component\ncomponent: billing-worker\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(
        &f,
        &["component.yaml:4: connection \"hr-service\" is a component connection of \"billing-worker\": only its owner may use it, and this component is \"user-portal\""],
    );
}

#[test]
fn a_connection_of_another_project() {
    let c = format!("kind: Connection\nid: {ID1}\nname: hr-service\nproject: finance\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(
        &f,
        &["connection \"hr-service\" belongs to project \"finance\", but this component is in project \"hr-project\": a connection is visible only inside its own project"],
    );
}

#[test]
fn a_component_connection_without_an_owner() {
    let c = format!("kind: Connection\nid: {ID1}\nname: hr-service\nproject: hr-project\nvisibility: component\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(
        &f,
        &[
            "connections.yaml:5: component connection \"hr-service\" has no owner",
            "fix: add `component: <owning component>`",
        ],
    );
}

#[test]
fn oauth2_without_its_three_parameters() {
    let mut c = connection(ID1, "hr-service", &[("ConsumerKey", "abc")]);
    c.push_str("security: oauth2\n");
    let f = Fixture::with(&hr_component(), &c);
    expect_config_error(
        &f,
        &[
            "connections.yaml:9: OAuth connection \"hr-service\" lacks ConsumerSecret, TokenURL",
            "fix: add those parameters",
        ],
    );
}

#[test]
fn two_sources_for_one_variable() {
    let comp =
        hr_component() + "configurations:\n  env:\n    - name: CHOREO_HR_SERVICE_SERVICEURL\n      value: literal\n";
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    expect_config_error(
        &f,
        &[
            "variable CHOREO_HR_SERVICE_SERVICEURL has two sources",
            "ServiceURL of \"hr-service\"",
            "a literal value at",
            "fix: rename one of them",
        ],
    );
    // Two references whose names normalise alike collide too.
    let comp = component_yaml(&[("hr-service", HR_REF), ("hr_service", HR_REF)]);
    let conns =
        connection(ID1, "hr-service", &[("ServiceURL", "a")]) + &connection(ID2, "hr_service", &[("ServiceURL", "b")]);
    expect_config_error(&Fixture::with(&comp, &conns), &["variable CHOREO_HR_SERVICE_SERVICEURL has two sources"]);
}

#[test]
fn config_group_and_form_need_ignore_unsupported() {
    let comp = hr_component()
        + "configurations:\n  env:\n    - name: ORG\n      valueFrom:\n        configGroupRef:\n          name: org\n          key: ORG\n    - name: PW\n      valueFrom:\n        configForm:\n          displayName: Password\n";
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    expect_config_error(
        &f,
        &[
            "component.yaml:8: variable ORG comes from configGroupRef, which connd cannot serve",
            "variable PW comes from configForm",
            "fix: give the value in the platform's configuration, or pass --ignore-unsupported",
        ],
    );
    let out = f.run("check", &["--ignore-unsupported"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stdout,
        &["ORG", "left out: configGroupRef is not served by connd", "CHOREO_HR_SERVICE_SERVICEURL"],
    );
}

#[test]
fn remote_parameters_need_a_control_plane() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ConsumerKey", "{ remote: true }")]));
    // `check` contacts nothing and needs no control plane; `env` needs one.
    let out = f.run("env", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            "parameter ConsumerKey of connection \"hr-service\" is `remote: true`, which needs a control plane",
            "fix: pass --control-plane URL",
        ],
    );
}

#[test]
fn a_yaml_alias_bomb_is_refused_quickly() {
    let mut bomb = String::from(
        "schemaVersion: 1.2\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["a", "b", "c", "d", "e", "f", "g", "h"]) {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let f = Fixture::with(&bomb, &connection(ID1, "hr-service", &[]));
    expect_config_error(
        &f,
        &["component.yaml:1: YAML aliases expand past the parser's repetition limit", "fix: write the values out"],
    );
}

#[test]
fn a_file_over_the_size_limit() {
    let big = format!("# {}\n", "x".repeat(9 * 1024 * 1024));
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[])).file("big.yaml", &big);
    expect_config_error(
        &f,
        &["big.yaml: file is 9437187 bytes, over the limit of 8388608 bytes", "fix: split the connections"],
    );
}

#[test]
fn a_file_that_is_not_utf8() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[]));
    std::fs::write(f.join("latin1.yaml"), b"kind: Connection\nname: caf\xe9\n").unwrap();
    expect_config_error(
        &f,
        &["latin1.yaml:2: file is not UTF-8 (invalid byte at offset 26)", "fix: save the file as UTF-8"],
    );
}

/// Editors on Windows save UTF-8 with a byte-order mark: YAML allows it at the start.
#[test]
fn a_byte_order_mark_starts_a_file_as_yaml_allows() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ServiceURL", "https://hr")]));
    for name in ["component.yaml", "connections.yaml", "identity.yaml"] {
        let text = std::fs::read_to_string(f.join(name)).unwrap();
        std::fs::write(f.join(name), format!("\u{feff}{text}")).unwrap();
    }
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["ok: 1 connection, "]);
}

/// The file that holds `kind: Component` cannot be read: that is the one error, not
/// also "does not know which component this is".
#[test]
fn an_unreadable_identity_file_is_one_error() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[]));
    std::fs::write(f.join("identity.yaml"), b"kind: Component\nproject: hr-project\nname: caf\xe9\n").unwrap();
    let out = expect_config_error(&f, &["(1 error)", "identity.yaml:3: file is not UTF-8"]);
    assert!(!out.stderr.contains("does not know which component"), "{out:?}");
}

#[test]
fn a_dangling_symlink() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[]));
    std::os::unix::fs::symlink("..data/gone.yaml", f.join("gone.yaml")).unwrap();
    expect_config_error(&f, &["gone.yaml: dangling symlink: its target \"..data/gone.yaml\" does not exist"]);
}

#[test]
fn an_unreadable_file_source() {
    let f =
        Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ChoreoAPIKey", "{ file: missing-key }")]));
    let missing = f.join("missing-key");
    let out = expect_config_error(
        &f,
        &["cannot read ChoreoAPIKey of connection \"hr-service\" from", "missing-key", "No such file"],
    );
    assert!(out.stderr.contains(&missing.display().to_string()), "{out:?}");
    // exec fails closed: the workload never starts.
    let marker = f.join("started");
    let out = f.run("exec", &["--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.code, 78, "{out:?}");
    assert!(!marker.exists(), "the workload started with a value missing");
}

#[test]
fn a_document_without_kind_and_an_unknown_kind() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[]))
        .file("extra.yaml", "name: x\n---\nkind: Secret\n");
    expect_config_error(&f, &["extra.yaml:1: document has no `kind`", "extra.yaml:3: unknown kind \"Secret\""]);
}

#[test]
fn no_identity_and_two_identities() {
    let f = Fixture::new().file("component.yaml", &hr_component()).file("c.yaml", &connection(ID1, "hr-service", &[]));
    expect_config_error(&f, &["connd does not know which component this is", "fix: add a document `kind: Component`"]);
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[])).file("again.yaml", IDENTITY);
    expect_config_error(
        &f,
        &["identity.yaml:3: a second `kind: Component` document (the first is at", "again.yaml:3)"],
    );
}

#[test]
fn an_unsupported_schema_version() {
    let comp = hr_component().replace("schemaVersion: 1.2", "schemaVersion: 3.1");
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[]));
    expect_config_error(
        &f,
        &["component.yaml:1: component.yaml has schemaVersion \"3.1\"", "fix: set `schemaVersion: 1.2`"],
    );
}

#[test]
fn a_parameter_with_two_sources() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ServiceURL", "{ value: a, file: /b }")]));
    expect_config_error(
        &f,
        &["connections.yaml:8: parameter ServiceURL has more than one source", "fix: give exactly one of"],
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let comp = component_yaml(&[("hr-service", HR_REF), ("gone-service", HR_REF)]);
    let conns = connection("not-a-uuid", "x", &[]) + &connection(ID1, "hr-service", &[("Key", "{ file: missing }")]);
    let f = Fixture::with(&comp, &conns);
    let out = expect_config_error(
        &f,
        &[
            "(4 errors)",
            "is not a UUID",
            "breaks the naming rule",
            "no connection descriptor named \"gone-service\"",
            "cannot read Key of connection \"hr-service\" from",
        ],
    );
    assert_eq!(out.stderr.matches("  fix: ").count(), 4, "{out:?}");
}

#[test]
fn values_never_appear_in_parser_errors() {
    let f = Fixture::with(
        &hr_component(),
        &connection(ID1, "hr-service", &[("ConsumerSecret", "{ remote: s3cr3t-value }")]),
    );
    let out =
        expect_config_error(&f, &["parameters.ConsumerSecret.remote: invalid type: a string, expected a boolean"]);
    assert!(!out.stderr.contains("s3cr3t-value"), "{out:?}");
}

#[test]
fn values_never_appear_as_numbers_or_mistyped_maps() {
    let f =
        Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ConsumerSecret", "{ remote: 98765432 }")]));
    let out =
        expect_config_error(&f, &["parameters.ConsumerSecret.remote: invalid type: an integer, expected a boolean"]);
    assert!(!out.stderr.contains("98765432"), "{out:?}");
    // `{hunter2secret}` is a map whose key is the value: the parser calls it a field.
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("DbPassword", "{hunter2secret}")]));
    let out = expect_config_error(
        &f,
        &["parameters.DbPassword: a value written as a YAML flow map", "fix: quote the value: `DbPassword: \"{...}\"`"],
    );
    assert!(!out.stderr.contains("hunter2secret"), "{out:?}");
}

#[test]
fn a_parameter_given_twice() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ServiceURL", "a"), ("ServiceURL", "b")]));
    expect_config_error(&f, &["connections.yaml:8: parameters: parameter ServiceURL is given twice"]);
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success());
}

#[test]
fn a_fifo_is_refused_not_read() {
    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ServiceURL", "u")]));
    mkfifo(&f.join("pipe.yaml"));
    expect_config_error(&f, &["pipe.yaml: not a regular file", "fix: connd reads only regular files"]);

    let f = Fixture::with(&hr_component(), &connection(ID1, "hr-service", &[("ChoreoAPIKey", "{ file: key-fifo }")]));
    mkfifo(&f.join("key-fifo"));
    expect_config_error(
        &f,
        &["cannot read ChoreoAPIKey of connection \"hr-service\"", "key-fifo: it is not a regular file"],
    );
}

#[test]
fn a_key_over_1024_bytes_is_refused_as_yaml_in_every_form() {
    // Refused by libyaml: as many bytes in fewer characters, or inside a flow map.
    let long = "é".repeat(513);
    let f = Fixture::new()
        .file("component.yaml", &format!("schemaVersion: 1.2\n{long}: x\n"))
        .file("identity.yaml", IDENTITY);
    expect_config_error(&f, &["component.yaml:2: could not find expected ':'", "fix: correct the YAML"]);
    let key = "K".repeat(1025);
    let connection = format!(
        "kind: Connection\nid: {ID1}\nname: hr-service\nproject: hr-project\nresourceRef: {HR_REF}\n\
         parameters: {{ ServiceURL: https://hr.example, {key}: v }}\n"
    );
    let f = Fixture::with(&hr_component(), &connection);
    let out = expect_config_error(&f, &["connections.yaml:6:"]);
    let env = f.run("env", &["--format", "json"]);
    assert_eq!((env.code, env.stderr), (78, out.stderr));
}

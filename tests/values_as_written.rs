//! A value arrives exactly as written (docs/config.md, docs/control-plane.md): unquoted YAML scalars in every value
//! position and JSON numbers from the control plane reach the workload as their text; a
//! YAML null is refused with "quote it". A property test over generated scalars proves
//! text in = text out through the loader and `env`'s output.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::*;
use connd::output::{render_env, Format};
use connd::resolve::{plan, Options};
use connd::source::values::{materialize, Fetched};
use proptest::prelude::*;

const HR_REF: &str = "service:/HRProject/users/v1/ad088/PUBLIC";
const ID1: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const ID2: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";

/// A directory with `text` in every value position: a block parameter, a `value:` map,
/// a flow-style descriptor's parameter and a `configurations.env` literal. `comment`
/// follows the value where a comment can (not inside a flow map, where it would end it).
fn every_position(text: &str) -> Fixture {
    every_position_with(text, "")
}

fn every_position_with(text: &str, comment: &str) -> Fixture {
    let comp = component_yaml(&[("hr-service", HR_REF), ("flow-service", HR_REF)])
        + &format!("configurations:\n  env:\n    - name: LITERAL\n      value: {text}{comment}\n");
    let plain = format!("{text}{comment}");
    let block = connection(ID1, "hr-service", &[("Plain", &plain), ("Spec", &format!("{{ value: {text} }}"))]);
    let flow = format!(
        "---\n{{kind: Connection, id: {ID2}, name: flow-service, project: hr-project, parameters: {{Flow: {text}}}}}\n"
    );
    Fixture::with(&comp, &(block + &flow))
}

const NAMES: [&str; 4] = ["CHOREO_HR_SERVICE_PLAIN", "CHOREO_HR_SERVICE_SPEC", "CHOREO_FLOW_SERVICE_FLOW", "LITERAL"];

/// The variables `env --format json` would print for `dir`, or the config error.
fn env_json(dir: &std::path::Path) -> Result<serde_json::Value, String> {
    let plan = plan(dir, &Options::default()).map_err(|e| e.to_string())?;
    let values = materialize(&plan, &Fetched::default()).map_err(|e| e.to_string())?;
    Ok(serde_json::from_str(&render_env(&values.env, Format::Json)).expect("env's JSON"))
}

#[test]
fn unquoted_scalars_reach_the_workload_as_written() {
    let f = every_position("22.10");
    let out = f.run("env", &["--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for name in NAMES {
        assert_eq!(env[name], "22.10", "{name} in {out:?}");
    }
    for text in ["1.10", "0x1F", "1e3", "+5", ".inf", "007", "yes", "2024-01-02", "18446744073709551616"] {
        let env = env_json(every_position(text).path()).unwrap();
        for name in NAMES {
            assert_eq!(env[name], text, "{name}");
        }
    }
}

#[test]
fn a_yaml_null_in_a_value_position_says_quote_it() {
    for (line, position) in [(8, "Plain"), (9, "Spec")] {
        let value = if position == "Plain" { "~".to_owned() } else { "{ value: ~ }".to_owned() };
        let params =
            [("Plain", "x"), ("Spec", "{ value: y }")]
                .map(|(k, v)| if k == position { (k, value.as_str()) } else { (k, v) });
        let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &connection(ID1, "hr-service", &params));
        let out = f.run("check", &[]);
        assert_eq!(out.code, 78, "{out:?}");
        assert_contains(&out.stderr, &[&format!("connections.yaml:{line}:"), "is YAML's null", "quote it"]);
    }
    let comp = component_yaml(&[("hr-service", HR_REF)]) + "configurations:\n  env:\n    - name: EMPTY\n      value:\n";
    let f = Fixture::with(&comp, &connection(ID1, "hr-service", &[("A", "x")]));
    let out = f.run("check", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &["component.yaml:8: configurations.env[0]: the value is YAML's null", "fix: quote it"],
    );
}

#[test]
fn a_control_plane_number_keeps_its_digits() {
    let cp = FakeControlPlane::start(false);
    let body = r#"{"id": "x", "version": "1", "parameters": {"AccountId": 18446744073709551616, "Rate": 22.10}}"#;
    cp.script(ID1, vec![Reply::raw(200, body)]);
    let params = [("AccountId", "{ remote: true }"), ("Rate", "{ remote: true }")];
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &connection(ID1, "hr-service", &params))
        .file("token", "t\n");
    let (url, ca, token) = (cp.url(), cp.ca_file().display().to_string(), f.join("token").display().to_string());
    let out = f.run("env", &["--control-plane", &url, "--ca-file", &ca, "--token-file", &token, "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(env["CHOREO_HR_SERVICE_ACCOUNTID"], "18446744073709551616");
    assert_eq!(env["CHOREO_HR_SERVICE_RATE"], "22.10");
}

/// Every JSON number (RFC 8259 §6) keeps its text, also one no f64 can hold.
#[test]
fn a_control_plane_number_beyond_a_float_keeps_its_digits() {
    let cp = FakeControlPlane::start(false);
    let body = r#"{"id": "x", "version": "1", "parameters": {"Big": 1e400, "Small": -2.5E-400, "Neg": -0}}"#;
    cp.script(ID1, vec![Reply::raw(200, body)]);
    let params = [("Big", "{ remote: true }"), ("Small", "{ remote: true }"), ("Neg", "{ remote: true }")];
    let f = Fixture::with(&component_yaml(&[("hr-service", HR_REF)]), &connection(ID1, "hr-service", &params))
        .file("token", "t\n");
    let (url, ca, token) = (cp.url(), cp.ca_file().display().to_string(), f.join("token").display().to_string());
    let out = f.run("env", &["--control-plane", &url, "--ca-file", &ca, "--token-file", &token, "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(env["CHOREO_HR_SERVICE_BIG"], "1e400");
    assert_eq!(env["CHOREO_HR_SERVICE_SMALL"], "-2.5E-400");
    assert_eq!(env["CHOREO_HR_SERVICE_NEG"], "-0");
}

/// Plain scalars YAML would type, in their many spellings.
fn typed_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+-]?[0-9]{1,25}",
        "[+-]?[0-9]{1,3}(_[0-9]{3}){1,3}",
        "0x[0-9a-fA-F]{1,18}",
        "0o[0-7]{1,12}",
        "0b[01]{1,20}",
        "[+-]?[0-9]{1,6}\\.[0-9]{0,6}",
        "[+-]?\\.[0-9]{1,6}",
        "[+-]?[0-9]{1,4}(\\.[0-9]{1,4})?[eE][+-]?[0-9]{1,3}",
        "[+-]?\\.(inf|Inf|INF)",
        "\\.(nan|NaN|NAN)",
        "(true|True|TRUE|false|False|FALSE|yes|Yes|no|No|on|On|off|Off|y|n)",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}[Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,3})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?",
        "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}",
        "[a-z][a-z0-9._/-]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("CONND_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        // A fixed seed: CI runs the same cases every time; change it to explore.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5ca1a2),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Text in = text out, in every value position, with odd spacing and a comment.
    #[test]
    fn generated_scalars_reach_env_as_written(text in typed_scalar(), pad in "[ ]{0,3}", comment in prop::bool::ANY) {
        let written = format!("{pad}{text}");
        let f = every_position_with(&written, if comment { "   # a comment" } else { "" });
        let env = env_json(f.path()).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        for name in NAMES {
            prop_assert_eq!(env[name].as_str(), Some(text.as_str()), "{} for {:?}", name, written);
        }
    }

    /// A null in any spelling is refused with "quote it" and a file and line.
    #[test]
    fn nulls_are_refused(null in "(~|null|Null|NULL|)", pad in "[ ]{0,2}") {
        let f = every_position(&format!("{pad}{null}"));
        let e = env_json(f.path()).expect_err("a null is refused");
        prop_assert!(e.contains("quote it") && e.contains("connections.yaml:"), "{}", e);
    }
}

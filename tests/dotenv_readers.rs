//! `env --format dotenv` read back by a real reader, python-dotenv 1.2 (installed by
//! `.ci/run`): every value exact with `interpolate=False`; with its default
//! `interpolate=True`, exact unless it holds `${`, which python-dotenv expands in any
//! quoting (the README says so).

use crate::support::*;
use std::collections::BTreeMap;

/// Values that break naive quoting: quotes, backslashes, `$`, backticks, line breaks.
const VALUES: [&str; 15] = [
    "pa${HOME}ss",
    "a 'b' c",
    "back\\slash",
    "\"dq\"",
    "$HOME $1 \\$ `tick`",
    "multi\nline",
    "two\n\nbreaks",
    "#hash # not a comment",
    "  lead and trail  ",
    "=eq=",
    "ünï 😀",
    "it's \"both\" \\ and ${X}",
    "",
    "tab\there",
    "a\\\"b' \\\\ c",
];

/// What python-dotenv cannot read back from any quoting that systemd also reads (the
/// README lists them): a carriage return (Python reads the file with universal
/// newlines), and a value that ends in a backslash, when another double-quoted value
/// follows (its pattern takes the final `\\"` for an escaped quote and reads on).
const MISREAD: [&str; 2] = ["cr\r\nlf", "ends in \\"];

/// A directory whose literal variables V0, V1, ... hold `values`.
fn fixture(values: &[&str]) -> Fixture {
    let mut comp = component_yaml(&[]).replace("  connectionReferences:\n", "  connectionReferences: []\n");
    comp.push_str("configurations:\n  env:\n");
    for (i, v) in values.iter().enumerate() {
        comp.push_str(&format!("    - name: V{i}\n      value: {}\n", serde_json::to_string(v).unwrap()));
    }
    Fixture::new().file("component.yaml", &comp).file("identity.yaml", IDENTITY)
}

/// `env --format dotenv` of `values`, written to a file.
fn dotenv_file(values: &[&str]) -> (Fixture, std::path::PathBuf, String) {
    let f = fixture(values);
    let out = f.run("env", &["--format", "dotenv"]);
    assert_eq!(out.code, 0, "{out:?}");
    let path = f.join("values.env");
    std::fs::write(&path, &out.stdout).unwrap();
    (f, path, out.stdout)
}

/// What python-dotenv's `dotenv_values` reads from `path`.
fn python_dotenv(path: &std::path::Path, interpolate: bool) -> BTreeMap<String, String> {
    let script = "import json, sys\nfrom dotenv import dotenv_values\n\
                  print(json.dumps(dotenv_values(sys.argv[1], interpolate=sys.argv[2] == '1')))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(if interpolate { "1" } else { "0" })
        .env("HOME", "/home/reader")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python-dotenv is needed (.ci/run installs it: pip install 'python-dotenv>=1.2,<1.3'): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python-dotenv's values as JSON")
}

#[test]
fn python_dotenv_reads_every_value_exactly() {
    let (_f, path, text) = dotenv_file(&VALUES);
    let want: BTreeMap<String, String> =
        VALUES.iter().enumerate().map(|(i, v)| (format!("V{i}"), v.to_string())).collect();

    assert_eq!(python_dotenv(&path, false), want, "dotenv output:\n{text}");

    let read = python_dotenv(&path, true);
    for (name, value) in &want {
        if value.contains("${") {
            // The README's claim: python-dotenv expands `${NAME}` whatever the quoting.
            assert_ne!(&read[name], value, "python-dotenv no longer expands {value:?}: update the README");
        } else {
            assert_eq!(&read[name], value, "{name}");
        }
    }
    assert_eq!(read["V0"], "pa/home/readerss");
}

#[test]
fn what_python_dotenv_misreads_is_what_the_readme_lists() {
    for value in MISREAD {
        // Followed by another double-quoted value, as in any real file.
        let (_f, path, text) = dotenv_file(&[value, "next 'one'"]);
        let read = python_dotenv(&path, false);
        assert_ne!(
            read.get("V0").map(String::as_str),
            Some(value),
            "python-dotenv now reads {text:?}: update the README"
        );
    }
    // The README's claim: a value ending in a backslash takes the next variable with it.
    let (_f, path, text) = dotenv_file(&["ends in \\", "next 'one'", "third"]);
    let read = python_dotenv(&path, false);
    assert_eq!(read.get("V1"), None, "python-dotenv now reads the value after {text:?}: update the README");
    assert_eq!(read.get("V2").map(String::as_str), Some("third"), "{text:?}");
}

/// The README's words, exactly: a value ending in `\` loses itself and every variable up
/// to and including the next line holding a `"`, even inside single quotes; with no `"`
/// after it, nothing is lost.
#[test]
fn a_value_ending_in_a_backslash_loses_every_line_up_to_the_next_double_quote() {
    let (_f, path, text) = dotenv_file(&["ends in \\", "plain", "a \"quote\" inside", "after"]);
    assert!(text.contains("V2='a \"quote\" inside'"), "the `\"` is inside single quotes: {text}");
    let read = python_dotenv(&path, false);
    assert_eq!(read.keys().map(String::as_str).collect::<Vec<_>>(), ["V3"], "{text:?}: update the README");
    let (_f, path, text) = dotenv_file(&["ends in \\", "plain", "more"]);
    assert_eq!(python_dotenv(&path, false).len(), 3, "{text:?}: with no `\"` after it nothing is lost");
}

/// `check` and `render` warn of such a value (and `--strict` refuses it).
#[test]
fn check_and_render_warn_of_a_value_python_dotenv_loses() {
    let f = fixture(&["ends in \\", "fine"])
        .file("f.yaml", "kind: File\npath: /app.env\nformat: dotenv\nvalues:\n  - name: A\n    value: 'x\\'\n");
    let out = f.run("check", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stderr, &["the value of V0 ends in a backslash", "python-dotenv loses it"]);
    assert_contains(&out.stdout, &["ok, with 1 warning"]);
    assert_eq!(f.run("check", &["--strict"]).code, 78);
    let root = tempfile::tempdir().unwrap();
    let out = f.run("render", &["--files-root", &root.path().display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stderr, &["f.yaml:5: value A of /app.env ends in a backslash"]);
}

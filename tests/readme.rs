//! The README's first directory works as its text says, copied as a user would copy it.

use crate::support::*;

#[test]
fn the_readme_first_directory_gives_the_variables_it_promises() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut f = Fixture::new();
    let mut names = Vec::new();
    for block in readme.split("<!-- readme-file: ").skip(1) {
        let (name, rest) = block.split_once(" -->\n```yaml\n").expect("a yaml block after the marker");
        let body = rest.split("```").next().unwrap();
        f = f.file(name, body);
        names.push(name.to_owned());
    }
    assert_eq!(names, ["component.yaml", "identity.yaml", "connections.yaml"]);
    let out = f.run("exec", &["--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env = format!("\n{}", out.stdout);
    assert_contains(
        &env,
        &[
            "\nCHOREO_ORDERS_DB_PORT=5432\n",
            "\nCHOREO_ORDERS_DB_PASSWORD=change-me\n",
            "\nDATABASE_HOST=pg-main.db.internal\n",
            "\nLOG_LEVEL=info\n",
        ],
    );
    assert!(!out.stdout.contains("CHOREO_ORDERS_DB_HOSTNAME"), "the rename replaces the default name");
    let check = f.run("check", &[]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(!check.stdout.contains("change-me"), "{check:?}");
}

/// Every test the fault matrix cites exists: `module::name` is a `fn name` in
/// `tests/module.rs`, so a renamed or removed test cannot leave a row pointing at nothing.
#[test]
fn the_fault_matrix_cites_only_tests_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let matrix = readme.split("\n## Fault matrix\n").nth(1).expect("a Fault matrix section");
    let matrix = matrix.split("\n## ").next().unwrap();
    let mut cited = 0;
    for row in matrix.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| fault ")) {
        let tests = row.trim_end_matches('|').rsplit('|').next().unwrap();
        for name in tests.split('`').skip(1).step_by(2) {
            let (module, rest) = name.split_once("::").unwrap_or_else(|| panic!("not module::test: {name}"));
            let file = std::fs::read_to_string(format!("{root}/tests/{module}.rs"))
                .unwrap_or_else(|e| panic!("{name}: tests/{module}.rs: {e}"));
            let test = rest.rsplit("::").next().unwrap();
            assert!(file.contains(&format!("fn {test}(")), "{name} is cited by the fault matrix but does not exist");
            cited += 1;
        }
    }
    assert!(cited >= 20, "only {cited} tests cited:\n{matrix}");
}

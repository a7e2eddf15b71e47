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

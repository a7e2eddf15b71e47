//! The reference pages in `docs/` are what code comments, tests and the README cite: every
//! page under `docs/` they name exists, and no comment in `src/` cites a file outside the repository.

use std::path::{Path, PathBuf};

/// Every file under `dir` (recursively) whose name ends in one of `exts`.
fn files_under(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, exts, out);
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)) {
            out.push(path);
        }
    }
}

/// The `docs/....md` paths `text` names: `docs/`, a page name of `[A-Za-z0-9_-]`, then `.md`
/// not followed by a letter or digit.
fn cited_pages(text: &str) -> Vec<String> {
    let mut pages = Vec::new();
    for (at, _) in text.match_indices("docs/") {
        let rest = &text[at + "docs/".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        let after = &rest[name.len()..];
        let ends = after.strip_prefix(".md").is_some_and(|a| !a.starts_with(|c: char| c.is_ascii_alphanumeric()));
        if !name.is_empty() && ends {
            pages.push(format!("docs/{name}.md"));
        }
    }
    pages
}

#[test]
fn every_docs_page_cited_in_the_repository_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for dir in ["src", "tests", "benches"] {
        files_under(&root.join(dir), &["rs"], &mut files);
    }
    files_under(&root.join("docs"), &["md"], &mut files);
    let mut cited = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for page in cited_pages(&text) {
            assert!(root.join(&page).is_file(), "{} cites {page}, which does not exist", file.display());
            cited += 1;
        }
    }
    // The pages cite each other, the README links to them, and src/ cites them in dozens of comments.
    assert!(cited >= 70, "only {cited} citations of docs/ pages found: is the scan looking in the right places?");
    // The index is a page too: a link written `docs/README.md` is cited like the others.
    assert!(root.join("docs/README.md").is_file());
}

#[test]
fn no_source_comment_cites_a_contract_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_under(&root.join("src"), &["rs"], &mut files);
    assert!(files.len() > 20, "src/ has {} files", files.len());
    let marker = concat!("SPEC", " §");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains(marker),
                "{}:{}: cites {marker}: cite the docs/ page instead",
                file.display(),
                n + 1
            );
        }
    }
}

#[test]
fn cited_pages_are_found_in_prose_and_links() {
    let text = "see docs/files.md, [api](docs/api.md#metrics) and docs/ alone; not docs/x.mdx";
    assert_eq!(cited_pages(text), ["docs/files.md", "docs/api.md"]);
}

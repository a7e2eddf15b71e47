//! The fast path reads every document it takes exactly as serde_yaml_ng does: the same
//! documents fed to both, as every raw model connd reads and as a YAML tree, must give
//! equal values wherever the fast path does not give way. Inputs: the repository's YAML,
//! the YAML in the integration tests' sources, and generated documents (the loader fuzz
//! test's shapes, and edits of the example directory).

use super::*;
use crate::config::{files, raw};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::path::Path;

/// Reads `text` both ways as `T`: whether the fast path took it. A value it gives must
/// be serde_yaml_ng's.
fn same<T: DeserializeOwned + PartialEq + fmt::Debug>(text: &str) -> bool {
    let Some(fast) = read(text).and_then(|e| e.deserialize::<T>()) else { return false };
    match serde_yaml::from_str::<T>(text) {
        Ok(slow) => assert!(fast == slow, "{} read otherwise from {text:?}", std::any::type_name::<T>()),
        Err(e) => panic!("{} read from a document serde_yaml_ng refuses ({e}): {text:?}", std::any::type_name::<T>()),
    }
    true
}

/// Walks the keys of `text` both ways, descending into some: whether the fast path
/// took it. The keys it visits must be those of serde_yaml_ng's tree, in its order.
fn same_keys(text: &str) -> bool {
    let Some(events) = read(text) else { return false };
    let walk = |walker: &mut dyn FnMut(&mut Visit<'_>)| {
        let mut seen = Vec::new();
        walker(&mut |place: &[&str], key: &str| {
            seen.push(format!("{}/{key}", place.join("/")));
            key.len() % 3 != 1
        });
        seen
    };
    let mut took = false;
    let fast = walk(&mut |visit| took = events.walk_keys(visit).is_some());
    if !took {
        return false;
    }
    let tree = serde_yaml::from_str::<serde_yaml::Value>(text)
        .unwrap_or_else(|e| panic!("keys walked in a document serde_yaml_ng refuses ({e}): {text:?}"));
    let slow = walk(&mut |visit| walk_tree(&tree, visit));
    assert_eq!(fast, slow, "keys walked otherwise in {text:?}");
    true
}

/// Every model connd reads a document as: how many the fast path took.
fn every_model(text: &str) -> usize {
    [
        same_keys(text),
        same::<raw::ConnectionDoc>(text),
        same::<raw::ComponentDoc>(text),
        same::<raw::FileDoc>(text),
        same::<raw::ComponentYaml>(text),
        same::<serde_yaml::Value>(text),
    ]
    .into_iter()
    .filter(|took| *took)
    .count()
}

/// Every document of a file, as the loader splits it.
fn each_document(text: &str) -> usize {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    files::documents(text).iter().map(|d| every_model(d.text)).sum()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML files under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.extend(std::fs::read_to_string(&path).ok());
        }
    }
}

/// The string literals of a Rust source, escapes applied, roughly: enough to find the
/// YAML the integration tests write.
fn literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'r' && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"')) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let start = i + 2 + hashes;
                let close = format!("\"{}", "#".repeat(hashes));
                if let Some(len) = src[start..].find(&close) {
                    out.push(src[start..start + len].to_owned());
                    i = start + len + close.len();
                    continue;
                }
            }
        }
        if b[i] == b'\'' {
            // A char literal such as '"' must not open a string.
            i += if b.get(i + 2) == Some(&b'\'') {
                3
            } else if b.get(i + 1) == Some(&b'\\') {
                4
            } else {
                1
            };
            continue;
        }
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let mut s = String::new();
        let mut chars = src[i + 1..].char_indices();
        let mut end = src.len();
        while let Some((j, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1 + j + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('0') => s.push('\0'),
                    Some('\n') => {
                        while chars.clone().next().is_some_and(|(_, c)| c.is_whitespace()) {
                            chars.next();
                        }
                    }
                    Some('u') => {
                        let hex: String = chars.by_ref().map(|(_, c)| c).take_while(|&c| c != '}').skip(1).collect();
                        s.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                    }
                    Some(c) => s.push(c),
                    None => {}
                },
                c => s.push(c),
            }
        }
        out.push(s);
        i = end;
    }
    out
}

#[test]
fn the_repositorys_yaml_reads_the_same() {
    let mut texts = Vec::new();
    yaml_files(&repo().join("config"), &mut texts);
    yaml_files(&repo().join("deploy"), &mut texts);
    let took: usize = texts.iter().map(|t| each_document(t)).sum();
    assert!(took >= 10, "the fast path took only {took} readings of the repository's YAML");
}

#[test]
fn the_examples_take_the_fast_path() {
    let dir = repo().join("config/example");
    for name in ["component.yaml", "connections.yaml"] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else { continue };
        for doc in files::documents(&text) {
            let took = match name {
                "component.yaml" => same::<raw::ComponentYaml>(doc.text),
                _ => same::<raw::ConnectionDoc>(doc.text) || same::<raw::ComponentDoc>(doc.text),
            };
            assert!(took, "{name}: the fast path gave way on {:?}", doc.text);
        }
    }
}

#[test]
fn the_tests_yaml_reads_the_same() {
    let (mut docs, mut took) = (0, 0);
    for e in std::fs::read_dir(repo().join("tests")).unwrap().flatten() {
        let Ok(src) = std::fs::read_to_string(e.path()) else { continue };
        for text in literals(&src) {
            if ["kind:", "schemaVersion", "parameters", "dependencies"].iter().any(|k| text.contains(k)) {
                docs += 1;
                took += each_document(&text);
            }
        }
    }
    assert!(docs > 100 && took > 100, "{docs} texts, {took} readings taken");
}

/// A YAML scalar: typed-looking, quoted, odd (the loader fuzz test's, and more).
// One piece: a flat list of alternatives, each a line or two.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,12}",
        "[+-]?[0-9]{1,30}(\\.[0-9]{0,5})?",
        "[+-]?(0x|0o|0b)[0-9a-f_]{0,20}",
        "[+-]?[0-9.]{0,4}[eE]?[+-]?[0-9]{0,3}",
        prop::sample::select(vec![
            "~",
            "",
            ".inf",
            "-.Inf",
            "+.inf",
            ".NaN",
            ".nan",
            "null",
            "Null",
            "NULL",
            "nUll",
            "true",
            "True",
            "TRUE",
            "tRue",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "0",
            "-0",
            "+0",
            "00",
            "007",
            "-007",
            "0.",
            "1_000",
            "1e3",
            "1E3",
            "1.5e+3",
            "0x1F",
            "0X1F",
            "-0x1F",
            "+0x1F",
            "0o17",
            "0b101",
            "-0b101",
            "- a",
            "a #b",
            "a# b",
            "a:b",
            "a :b",
            "'a'",
            "\"a\"",
            "'it''s'",
            "\"quoted: \\u00e9\"",
            "\"\\t\\n\\x41\\/\"",
            "\"a\\\nb\"",
            "|\n  lit\n",
            "|-\n  lit\n\n",
            "|+\n  lit\n\n",
            ">\n  fold\n  ed\n",
            ">2\n   x\n",
            "\"multi\n  line\"",
            "plain\n  continued",
            "2024-01-01",
            "12:30:00",
            "1:20",
            "!!str 5",
            "!custom x",
            "@x",
            "`x",
            "%x",
            "&a x",
            "*a",
            "? x",
            "[a, b]",
            "{a: b}",
            "{a: [b, {c: d}]}",
            "[]",
            "{}",
            "é",
            "日本",
            "\u{1F600}",
            "a\u{85}b",
            "\u{feff}x",
            "a\u{2028}b",
            "{\"a\":b}",
            "[\"a\":b]",
            "{a:b}",
            "[a:b]",
            "[a: b]",
            "{a: b, c}",
            "[a, b: c]",
            "http://x/?a=b",
            "a?",
            "a ?b",
            "? ",
            "a@b",
            "a`b",
            "x: y",
            "x:",
            "a:-",
            "- - a",
            "-a",
            "--a",
            "---",
            "...",
            "a\\",
            "\"\\/\"",
            "\"\\N\\_\\L\\P\"",
            "\"\\e\\a\\v\"",
            "'a\n\n  b'",
            "\"a\n\n  b\"",
            "a\n\n  b",
            "{a: b\n  , c: d}",
            "[a\n, b]",
            "#c",
            "a #c",
            "\"a\" #c",
        ])
        .prop_map(str::to_owned),
        "[\\PC]{0,20}".prop_map(|s| format!("{s:?}")),
        "[ -~]{0,20}",
    ]
}

/// A key: one connd reads, a near miss, a quoted one, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "kind",
            "id",
            "name",
            "project",
            "visibility",
            "component",
            "resourceRef",
            "security",
            "oauth",
            "parameters",
            "proxy",
            "headers",
            "port",
            "value",
            "file",
            "remote",
            "secret",
            "scopes",
            "audience",
            "schemaVersion",
            "dependencies",
            "connectionReferences",
            "serviceReferences",
            "configurations",
            "configuration",
            "env",
            "valueFrom",
            "connectionRef",
            "key",
            "from",
            "to",
            "path",
            "format",
            "values",
            "\"name\"",
            "'kind'",
            "dependancies",
            "<<",
            "~",
            "1",
            "true",
            "? complex",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z][A-Za-z0-9_]{0,10}",
    ]
}

fn node() -> impl Strategy<Value = String> {
    scalar().prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec((key(), inner.clone()), 0..5).prop_map(|entries| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            prop::collection::vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((key(), inner.clone()), 1..5).prop_map(|entries| {
                let lines: Vec<String> =
                    entries.iter().map(|(k, v)| format!("\n  {k}: {}", v.replace('\n', "\n  "))).collect();
                lines.concat()
            }),
            prop::collection::vec(inner, 1..4).prop_map(|items| {
                let lines: Vec<String> = items.iter().map(|v| format!("\n  - {}", v.replace('\n', "\n    "))).collect();
                lines.concat()
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "kind: Connection\n",
        "kind: Component\n",
        "kind: File\n",
        "schemaVersion: 1.2\n",
        "{kind: Connection, name: a}\n",
        "",
    ]);
    (kind, prop::collection::vec((key(), node()), 0..8)).prop_map(|(kind, entries)| {
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        format!("{kind}{}", body.concat())
    })
}

/// A valid document of the example directory or the startup bench's, with text
/// inserted, lines removed or indented.
fn edited() -> impl Strategy<Value = String> {
    let dir = repo().join("config/example");
    let mut bases: Vec<String> = ["component.yaml", "connections.yaml", "identity.yaml"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(dir.join(n)).ok())
        .collect();
    bases.push(
        "kind: Connection\nid: 00000001-0000-4000-8000-000000000001\nname: service-1\nproject: bench\n\
         visibility: project\nresourceRef: service:/Bench/svc1/v1/ep/PUBLIC\nsecurity: oauth2\nparameters:\n  \
         ServiceURL: https://svc1.bench.internal/v1\n  Port: 5432\n  ConsumerSecret: { value: secret-1 }\n  \
         ChoreoAPIKey: { file: api-key }\nproxy:\n  headers:\n    X-Key: ChoreoAPIKey\n  port: 15001\n"
            .to_owned(),
    );
    let fragment = prop_oneof![
        scalar(),
        prop::sample::select(vec![
            "\n",
            ": ",
            " ",
            "  ",
            "- ",
            "#",
            " #",
            "{",
            "}",
            "[",
            "]",
            ",",
            "'",
            "\"",
            "\\",
            "|",
            ">",
            "?",
            "\n---\n",
            "\n...\n",
            "%YAML 1.2\n---\n",
            "%TAG ! tag:x,2000:\n---\n",
            "\r\n",
            "\r",
            "\t",
            "\0",
            "\u{7f}",
            "\u{85}",
            "\u{feff}",
        ])
        .prop_map(str::to_owned),
    ];
    (prop::sample::select(bases), prop::collection::vec((any::<prop::sample::Index>(), 0..4u8, fragment), 1..4))
        .prop_map(|(base, edits)| {
            let mut lines: Vec<String> = base.split_inclusive('\n').map(str::to_owned).collect();
            for (at, op, text) in edits {
                if lines.is_empty() {
                    break;
                }
                let i = at.index(lines.len());
                match op {
                    0 => {
                        lines.remove(i);
                    }
                    1 => lines[i] = format!("  {}", lines[i]),
                    _ => {
                        let line = &lines[i];
                        let mut cut = at.index(line.len() + 1);
                        while !line.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        lines[i] = format!("{}{text}{}", &line[..cut], &line[cut..]);
                    }
                }
            }
            lines.concat()
        })
}

/// `CONND_EQUIV_CASES` (default 3000) and `CONND_EQUIV_SEED` (default 7) set the run.
fn runner() -> (TestRunner, u32) {
    let number = |name: &str, default: u64| std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    let cases = number("CONND_EQUIV_CASES", 3000) as u32;
    let seed = number("CONND_EQUIV_SEED", 7).to_le_bytes().repeat(4);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    (TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed)), cases)
}

fn run(strategy: impl Strategy<Value = String>) -> (u32, usize) {
    let (mut runner, cases) = runner();
    let took = std::cell::Cell::new(0usize);
    runner
        .run(&strategy, |text| {
            took.set(took.get() + each_document(&text));
            Ok(())
        })
        .unwrap();
    (cases, took.get())
}

#[test]
fn generated_documents_read_the_same() {
    let (cases, took) = run(document());
    assert!(took > cases as usize / 4, "the fast path took {took} readings of {cases} documents");
}

#[test]
fn edited_documents_read_the_same() {
    let (cases, took) = run(edited());
    assert!(took > cases as usize / 4, "the fast path took {took} readings of {cases} documents");
}

#[test]
fn plain_scalars_resolve_as_serde_yaml_ng_does() {
    let (mut runner, _) = runner();
    runner
        .run(&scalar(), |s| {
            for text in [format!("v: {s}\n"), format!("[{s}]\n"), format!("{s}: v\n"), format!("- {s}\n")] {
                each_document(&text);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn what_gives_way() {
    let took = |text: &str| read(text).is_some();
    assert!(took("kind: Connection\nproxy: { headers: { X-Key: Key }, port: 15001 }\nlist: [a, b]\n"));
    assert!(took("a: \"quoted \\\" # x?y : x\"\nb: 'it''s'\nc: plain text, with:colons\n"));
    assert!(took("# a comment with `backticks`, a: colon\nurl: http://x/y?a=b\n"));
    assert!(took("é: ü\nx: { a: [b, ö] }\ny:\n  - { c: d }\n"));
    assert!(!took("é: ü\nx: { a: [b,\n  ö] }\n"));
    for text in [
        "a: { b: c,\n  d: e }\n",
        "a: [b,\n  c]\n",
        "a: &x b\n",
        "a: *x\n",
        "a: !tag b\n",
        "a: |\n  b\n",
        "a: >\n  b\n",
        "a: b\na: c\n",
        "<<: {a: b}\n",
        "? a\n: b\n",
        ": b\n",
        "a:\tb\n",
        "a: b\r\n",
        "%YAML 1.2\n---\na: b\n",
        "[a]: b\n",
        "a: [b:]\n",
        "a: b\u{2028}c\n",
    ] {
        assert!(!took(text), "{text:?}");
    }
    // Keys libyaml finds too long (1024 bytes from their start), which yaml-rust2 takes:
    // past 1024 bytes in fewer characters, or in a flow collection; and so any line.
    for text in [
        format!("{}: x\n", "é".repeat(513)),
        format!("\"{}\": x\n", "é".repeat(512)),
        format!("x: {{{}: y}}\n", "k".repeat(1025)),
        format!("parameters: {{ HostName: h, {}: v }}\n", "K".repeat(1025)),
        format!("a: {}\n", "v".repeat(1100)),
    ] {
        assert!(!took(&text), "{text:?}");
        assert_eq!(every_model(&text), 0, "{text:?}");
    }
    assert!(took(&format!("{}: x\n", "é".repeat(400))));
    let deep = format!("{}a{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(!took(&deep));
}

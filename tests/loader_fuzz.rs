//! The loader fuzzed on stable Rust (proptest, fixed seed, bounded cases): mutated valid
//! directories and random YAML (deep nesting, anchors and aliases, huge scalars, odd
//! encodings, duplicate keys, every document kind). Every case must return, without a
//! panic, well within a hang cap; every failure must be a config error whose every
//! problem names a file of the directory. Cases over 1 s are counted and reported, not
//! failed on, so that a loaded machine does not make the test flaky.
//!
//! `CONND_FUZZ_CASES` (default 256) and `CONND_FUZZ_SEED` set the run; the README gives
//! the command for a long one.

use connd::resolve::{plan, Options};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A case past this is a hang, and fails the test.
const HANG: Duration = Duration::from_secs(30);
/// A case past this is counted as slow (the budget the issue sets).
const BUDGET: Duration = Duration::from_secs(1);

/// One file of a generated directory: its name and its bytes.
type File = (String, Vec<u8>);

/// The example directory, the valid start of every mutation.
fn example() -> Vec<File> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example");
    let mut files: Vec<File> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name.ends_with(".yaml")).then(|| (name, std::fs::read(e.path()).unwrap()))
        })
        .collect();
    files.sort();
    files
}

/// One edit of a file: where (a fraction of its length) and what.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(u32),
    DuplicateLine(u32),
    SwapLines(u32, u32),
    Insert(u32, String),
    Truncate(u32),
    Indent(u32, String),
}

/// Fragments that break YAML, or connd's reading of it, in interesting ways.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\t".to_owned()),
        Just(": ".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("*undefined".to_owned()),
        Just("{".to_owned()),
        Just("[".to_owned()),
        Just("\n---\n".to_owned()),
        Just("\n...\n".to_owned()),
        Just("%YAML 1.2\n".to_owned()),
        Just("!!binary ".to_owned()),
        Just("!custom ".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\0".to_owned()),
        Just("~".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("? ".to_owned()),
        Just("|\n".to_owned()),
        Just("kind: Connection\n".to_owned()),
        Just("kind: Component\n".to_owned()),
        Just("parameters:\n  X: 0x1F\n".to_owned()),
        Just("value: 22.10\n".to_owned()),
        "[a-zA-Z0-9 :#\\-\\n]{0,40}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<u32>().prop_map(Edit::DeleteLine),
        any::<u32>().prop_map(Edit::DuplicateLine),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<u32>(), fragment()).prop_map(|(a, s)| Edit::Insert(a, s)),
        any::<u32>().prop_map(Edit::Truncate),
        (any::<u32>(), prop_oneof![Just(" ".to_owned()), Just("  ".to_owned()), Just("\t".to_owned())])
            .prop_map(|(a, s)| Edit::Indent(a, s)),
    ]
}

/// `at` as a position in `0..=len`.
fn pos(at: u32, len: usize) -> usize {
    (at as u64 * (len as u64 + 1) / (u32::MAX as u64 + 1)) as usize
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let n = lines.len();
    match edit {
        Edit::DeleteLine(a) if n > 0 => {
            lines.remove(pos(*a, n - 1));
        }
        Edit::DuplicateLine(a) if n > 0 => {
            let i = pos(*a, n - 1);
            lines.insert(i, lines[i].clone());
        }
        Edit::SwapLines(a, b) if n > 0 => lines.swap(pos(*a, n - 1), pos(*b, n - 1)),
        Edit::Indent(a, s) if n > 0 => {
            let i = pos(*a, n - 1);
            lines[i] = format!("{s}{}", lines[i]);
        }
        Edit::Insert(a, s) => {
            let mut i = pos(*a, bytes.len());
            while i > 0 && !text.is_char_boundary(i) {
                i -= 1;
            }
            bytes.splice(i..i, s.bytes());
            return;
        }
        Edit::Truncate(a) => {
            bytes.truncate(pos(*a, bytes.len()));
            return;
        }
        _ => return,
    }
    *bytes = lines.concat().into_bytes();
}

/// A valid directory with edits to its files.
fn mutated() -> impl Strategy<Value = Vec<File>> {
    let files = example();
    let count = files.len();
    prop::collection::vec((0..count, edit()), 1..6).prop_map(move |edits| {
        let mut files = files.clone();
        for (i, e) in &edits {
            apply(&mut files[*i].1, e);
        }
        files
    })
}

/// A YAML scalar: typed-looking, quoted, odd or huge.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,12}",
        "[+-]?[0-9]{1,30}(\\.[0-9]{0,5})?",
        "0x[0-9a-f]{1,20}",
        Just("~".to_owned()),
        Just("".to_owned()),
        Just(".inf".to_owned()),
        Just("\"quoted: \\u00e9\"".to_owned()),
        Just("'it''s'".to_owned()),
        Just("19d2648b-d29c-4452-afdd-1b9311e81412".to_owned()),
        Just("service:/HRProject/users/v1/ad088/PUBLIC".to_owned()),
        (1usize..300_000).prop_map(|n| "x".repeat(n)),
        "[\\PC]{0,20}".prop_map(|s| format!("{s:?}")),
    ]
}

/// A key: one connd reads, a near miss, or anything.
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
            "value",
            "file",
            "remote",
            "secret",
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
            "connectionConfig",
            "dependancies",
            "envs",
            "ServiceURL",
            "AccessToken",
            "<<",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z][A-Za-z0-9_]{0,10}",
    ]
}

/// A YAML node as text at `indent`: scalars, block maps and lists, flow collections,
/// anchors and aliases, duplicate keys.
fn node() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => scalar(),
        1 => Just("*a".to_owned()),
        1 => scalar().prop_map(|s| format!("&a {s}")),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec((key(), inner.clone()), 0..5).prop_map(|entries| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            prop::collection::vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((key(), inner), 1..5).prop_map(|entries| {
                // A block map, indented under its parent key.
                let lines: Vec<String> =
                    entries.iter().map(|(k, v)| format!("\n  {k}: {}", v.replace('\n', "\n  "))).collect();
                lines.concat()
            }),
        ]
    })
}

/// A document: a kind (every one connd knows, others, or none) and random entries.
fn document() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("kind: Connection\n".to_owned()),
        Just("kind: Component\n".to_owned()),
        Just("kind: File\n".to_owned()),
        Just("kind: Conection\n".to_owned()),
        Just("".to_owned()),
    ];
    (kind, prop::collection::vec((key(), node()), 0..8)).prop_map(|(kind, entries)| {
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        format!("{kind}{}", body.concat())
    })
}

/// Nesting far past the parser's recursion limit.
fn deep() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..20_000).prop_map(|n| format!("kind: Connection\nparameters: {}{}\n", "[".repeat(n), "]".repeat(n))),
        (1usize..3_000).prop_map(|n| {
            let mut s = String::from("schemaVersion: 1.2\n");
            for i in 0..n {
                s.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
            }
            s
        }),
        (1usize..12).prop_map(|n| {
            // A billion laughs: each level aliases the last nine times.
            let mut s = String::from("kind: Connection\na0: &a0 [x, x, x, x, x, x, x, x, x]\n");
            for i in 1..=n {
                let p = i - 1;
                s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
            }
            s
        }),
    ]
}

/// A file's bytes: documents joined by markers, in an encoding connd may not read.
fn content() -> impl Strategy<Value = Vec<u8>> {
    let docs = prop_oneof![
        4 => prop::collection::vec(document(), 1..4).prop_map(|d| d.join("---\n")),
        1 => deep(),
    ];
    (docs, 0..6u8).prop_map(|(text, encoding)| match encoding {
        0 => format!("\u{feff}{text}").into_bytes(),
        1 => {
            let mut b = vec![0xff, 0xfe];
            b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            b
        }
        2 => text.bytes().map(|b| if b == b'e' { 0xe9 } else { b }).collect(),
        _ => text.into_bytes(),
    })
}

/// A directory of random files, names included.
fn random_dir() -> impl Strategy<Value = Vec<File>> {
    let name = prop::sample::select(vec![
        "component.yaml",
        "component.yml",
        "a.yaml",
        "b.yml",
        ".hidden.yaml",
        "notes.txt",
        "c.yaml",
    ]);
    prop::collection::vec((name.prop_map(str::to_owned), content()), 0..5)
}

/// Counts across the run, for the report.
#[derive(Default)]
struct Stats {
    cases: AtomicU64,
    slow: AtomicU64,
    max_micros: AtomicU64,
    ok: AtomicU64,
    /// The slowest case: its time and a summary of its files, for the report.
    slowest: parking_lot::Mutex<(u64, String)>,
}

/// File names, sizes and starts: enough to find a slow case again.
fn summary(files: &[File]) -> String {
    let parts: Vec<String> = files
        .iter()
        .map(|(name, bytes)| {
            let start: String = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            format!("{name} ({} bytes): {start:?}", bytes.len())
        })
        .collect();
    parts.join("; ")
}

/// Loads `files` as a directory on another thread, within `HANG`: a config error whose
/// every problem names a file of the directory, or a plan that renders.
fn load(files: &[File], stats: &Stats) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    // The example's `file:` sources, so that a mutated example can still be valid.
    let secrets = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example/secrets");
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    for e in std::fs::read_dir(secrets).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("secrets").join(e.file_name())).unwrap();
    }
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let path: PathBuf = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| match plan(&path, &Options::default()) {
            Ok(plan) => {
                let _ = connd::output::write_plan(&mut std::io::sink(), &plan);
                let _ = connd::output::write_plan_json(&mut std::io::sink(), &plan, None);
                Ok(true)
            }
            Err(e) => {
                for d in e.diagnostics.iter().chain(e.diagnostics.warnings()) {
                    if !d.origin.file.starts_with(&path) {
                        return Err(format!("a problem without a file of the directory: {d}"));
                    }
                }
                if e.diagnostics.is_empty() {
                    return Err("a config error with no problem in it".to_owned());
                }
                Ok(false)
            }
        });
        let _ = tx.send(result);
    });
    let outcome = rx.recv_timeout(HANG);
    let took = started.elapsed();
    stats.cases.fetch_add(1, Ordering::Relaxed);
    let micros = took.as_micros() as u64;
    if stats.max_micros.fetch_max(micros, Ordering::Relaxed) < micros {
        *stats.slowest.lock() = (micros, summary(files));
    }
    if took > BUDGET {
        stats.slow.fetch_add(1, Ordering::Relaxed);
    }
    match outcome {
        Err(_) => Err(TestCaseError::fail(format!("the load did not return within {HANG:?}: a hang"))),
        Ok(Err(_)) => Err(TestCaseError::fail("the load panicked")),
        Ok(Ok(Err(e))) => Err(TestCaseError::fail(e)),
        Ok(Ok(Ok(ok))) => {
            if ok {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn the_loader_survives_mutated_and_random_directories() {
    let cases = env_number("CONND_FUZZ_CASES", 256) as u32;
    let seed = env_number("CONND_FUZZ_SEED", 0x00c0_ffee);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let stats = Stats::default();
    let started = Instant::now();
    let strategy = prop_oneof![mutated(), random_dir()];
    let result = TestRunner::new(config).run(&strategy, |files| load(&files, &stats));
    let report = format!(
        "loader fuzz: seed {seed:#x}, {} cases ({} valid) in {:.1?}, slowest {} ms, {} over {BUDGET:?}",
        stats.cases.load(Ordering::Relaxed),
        stats.ok.load(Ordering::Relaxed),
        started.elapsed(),
        stats.max_micros.load(Ordering::Relaxed) / 1000,
        stats.slow.load(Ordering::Relaxed),
    );
    eprintln!("{report}");
    eprintln!("slowest case: {}", stats.slowest.lock().1);
    if let Err(e) = result {
        panic!("{report}\n{e}");
    }
}

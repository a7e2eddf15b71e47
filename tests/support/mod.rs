//! Test support: config-directory fixtures, a runner for the real binary, and the real
//! OpenID provider the OAuth tests talk to.

#![allow(dead_code)]

pub mod control_plane;
pub mod daemon;
pub mod fixtures;
pub mod flaky;
pub mod h2raw;
pub mod kubelet;
pub mod oidc;
pub mod proxy;
pub mod supervised;
pub mod tinyproxy;
pub mod upstream;
pub mod webhook;

pub use daemon::Daemon;
pub use fixtures::*;
pub use supervised::{run_command, Supervised};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `connd` binary cargo built for these tests.
pub fn connd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_connd")
}

/// A `connd` command with a clean environment: no inherited `CONND_*` settings, and a
/// `PATH` so that `exec` can find ordinary tools.
pub fn connd() -> Command {
    let mut cmd = Command::new(connd_bin());
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
    cmd
}

/// What a finished command printed, as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout ---\n{}--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `connd` with `args` and returns what it did.
pub fn run(args: &[&str]) -> Run {
    connd().args(args).output().expect("connd runs").into()
}

/// Asserts that `haystack` contains every needle, showing the whole text when not.
#[track_caller]
pub fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected to find {needle:?} in:\n{haystack}");
    }
}

/// A config directory in a temporary folder.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

/// The identity document most fixtures use.
pub const IDENTITY: &str = "kind: Component\nproject: hr-project\nname: user-portal\n";

impl Fixture {
    pub fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A fixture with `component.yaml`, the identity document and `connections.yaml`.
    pub fn with(component_yaml: &str, connections_yaml: &str) -> Fixture {
        Fixture::new()
            .file("component.yaml", component_yaml)
            .file("identity.yaml", IDENTITY)
            .file("connections.yaml", connections_yaml)
    }

    pub fn file(self, name: &str, text: &str) -> Fixture {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write fixture file");
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir_arg(&self) -> String {
        self.path().display().to_string()
    }

    /// Runs `connd <sub> --config-dir <this> <args...>`.
    pub fn run(&self, sub: &str, args: &[&str]) -> Run {
        connd().arg(sub).arg("--config-dir").arg(self.path()).args(args).output().expect("connd runs").into()
    }
}

/// A component.yaml referencing the given connections by `(name, resourceRef)`.
pub fn component_yaml(refs: &[(&str, &str)]) -> String {
    let mut s = String::from("schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n");
    for (name, r) in refs {
        s.push_str(&format!("    - name: {name}\n      resourceRef: {r}\n"));
    }
    s
}

/// A project connection descriptor with literal parameters.
pub fn connection(id: &str, name: &str, params: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nparameters:\n"
    );
    for (k, v) in params {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s
}

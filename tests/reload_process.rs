//! The reloader in `serve` and `run` as processes: a `--config-dir` symlink retargeted
//! (`ln -s release-2 tmp && mv -T tmp current`) is seen by the watcher, not at the next
//! re-scan; and what reloads log: nothing at start, the changed names (never values) after.

use crate::support::*;
use connd::serve::api::client::request;
use http::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long an awaited change may take: far below the 10 minutes of the re-scan and
/// refresh intervals set here, so only the watcher can make it.
const PATIENCE: Duration = Duration::from_secs(10);

fn write_release(root: &Path, name: &str, port: &str) {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, text) in refs(&files(port)) {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

/// `connd serve --config-dir current` started in `root`, re-scans and refreshes every
/// 10 minutes.
fn serve_in(root: &Path) -> Child {
    connd()
        .current_dir(root)
        .args(["serve", "--config-dir", "current", "--socket", "run/connd.sock"])
        .args(["--rescan-interval", "10m", "--refresh-interval", "10m"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connd serve starts")
}

/// Polls `/v1/env` until `pred` holds for its body; returns the body.
async fn env_until(socket: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Ok(a) = request(socket, Method::GET, "/v1/env").await {
            let text = a.text();
            if a.status == 200 && pred(&text) {
                return text;
            }
            assert!(start.elapsed() < PATIENCE, "{what} never showed; the last answer: {text}");
        }
        assert!(start.elapsed() < PATIENCE, "{what} never showed: no answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, then the exit code and stderr.
fn stop(child: Child) -> (i32, String) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signal");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[tokio::test]
async fn a_retargeted_config_dir_symlink_is_seen_by_the_watcher() {
    let root = tempfile::tempdir().unwrap();
    write_release(root.path(), "release-1", "5432");
    write_release(root.path(), "release-2", "6543");
    symlink("release-1", root.path().join("current")).unwrap();
    let child = serve_in(root.path());
    let socket = root.path().join("run/connd.sock");
    env_until(&socket, "release-1's port", |t| t.contains("\"CHOREO_MAIN_DB_PORT\":\"5432\"")).await;

    // `ln -s release-2 tmp && mv -T tmp current`
    symlink("release-2", root.path().join("tmp")).unwrap();
    std::fs::rename(root.path().join("tmp"), root.path().join("current")).unwrap();
    env_until(&socket, "release-2's port", |t| t.contains("\"CHOREO_MAIN_DB_PORT\":\"6543\"")).await;

    // And back, retargeting again: the new target is watched too.
    symlink("release-1", root.path().join("tmp")).unwrap();
    std::fs::rename(root.path().join("tmp"), root.path().join("current")).unwrap();
    env_until(&socket, "release-1's port again", |t| t.contains("\"CHOREO_MAIN_DB_PORT\":\"5432\"")).await;

    let (code, stderr) = stop(child);
    assert_eq!(code, 0, "{stderr}");
    let changes: Vec<&str> = stderr.lines().filter(|l| l.contains("values changed")).collect();
    assert_eq!(changes.len(), 2, "one line per change, none at start:\n{stderr}");
    for line in changes {
        assert_contains(line, &["CHOREO_MAIN_DB_PORT", "main-db"]);
        assert!(!line.contains("5432") && !line.contains("6543"), "a value in the log: {line}");
    }
}

/// A real folder as `--config-dir` that is itself replaced by a symlink: the path is
/// watched afresh, pointing at the new target.
#[tokio::test]
async fn a_config_dir_replaced_by_a_symlink_is_seen_by_the_watcher() {
    let root = tempfile::tempdir().unwrap();
    write_release(root.path(), "current", "5432");
    write_release(root.path(), "release-2", "6543");
    let child = serve_in(root.path());
    let socket = root.path().join("run/connd.sock");
    env_until(&socket, "the first port", |t| t.contains("\"CHOREO_MAIN_DB_PORT\":\"5432\"")).await;
    std::fs::rename(root.path().join("current"), root.path().join("old")).unwrap();
    symlink("release-2", root.path().join("current")).unwrap();
    env_until(&socket, "release-2's port", |t| t.contains("\"CHOREO_MAIN_DB_PORT\":\"6543\"")).await;
    let (code, stderr) = stop(child);
    assert_eq!(code, 0, "{stderr}");
}

/// `run`'s reloader starts after the workload and resolves once: values equal to those
/// the workload started with are no change, and nothing says they were.
#[test]
fn run_logs_no_change_at_start() {
    let root = tempfile::tempdir().unwrap();
    write_release(root.path(), "current", "5432");
    let out = connd()
        .current_dir(root.path())
        .args(["run", "--config-dir", "current", "--", "sleep", "1"])
        .output()
        .expect("connd run");
    let out = Run::from(out);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("values changed"), "{out:?}");
}

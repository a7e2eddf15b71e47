//! connd's own stderr and stdout failing (docs/commands.md "Logs"): a pipe whose reader is gone,
//! a full disk (/dev/full), a closed descriptor. `serve` keeps serving, `run` keeps
//! supervising, one-shot commands keep their exit codes, printing commands end quietly;
//! and what the logs look like to a person and to a log pipeline.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::serve::api::client::request;
use http::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The write end of a pipe whose read end is already closed: every write gets EPIPE.
fn reader_gone() -> Stdio {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

/// /dev/full: every write gets ENOSPC.
fn disk_full() -> Stdio {
    Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full"))
}

/// A child process, killed if the test ends early.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `connd serve` on a socket in `tmp`, with `stderr` as given.
fn serve(dir: &Path, tmp: &Path, extra: &[&str], stderr: Stdio) -> (Killed, PathBuf) {
    let socket = tmp.join("connd.sock");
    let child = connd()
        .args(["serve", "--config-dir"])
        .arg(dir)
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("connd serve starts");
    (Killed(child), socket)
}

/// Waits until `path` on the socket answers 200 with a body containing `needle`.
async fn until_answer(socket: &Path, path: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(a) = request(socket, Method::GET, path).await {
            let text = a.text();
            if a.status == 200 && text.contains(needle) {
                return text;
            }
        }
        assert!(start.elapsed() < PATIENCE, "no answer on {path} with {needle:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `child`'s exit and returns its code (None: killed by a signal).
fn exit_of(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(start.elapsed() < PATIENCE, "connd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of an unlabelled counter in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    let line =
        metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in:\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `serve` logs into a failing stderr; it still starts, reloads on a change, answers,
/// counts the dropped records and exits 0 on SIGTERM.
async fn serve_survives(stderr: Stdio) {
    let mut d = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, socket) = serve(d.path(), tmp.path(), &["--log-level", "debug"], stderr);
    until_answer(&socket, "/v1/env", "\"CHOREO_MAIN_DB_PORT\":\"5432\"").await;
    // A change: the reloader logs it, and must go on to publish it.
    d.update(&refs(&files("6543")));
    until_answer(&socket, "/v1/env", "\"CHOREO_MAIN_DB_PORT\":\"6543\"").await;
    let metrics = until_answer(&socket, "/metrics", "connd_log_write_failures_total").await;
    assert!(counter(&metrics, "connd_log_write_failures_total") >= 2, "{metrics}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(exit_of(&mut child), Some(0), "a clean exit after SIGTERM");
}

#[tokio::test]
async fn serve_keeps_serving_when_its_log_reader_is_gone() {
    serve_survives(reader_gone()).await;
}

#[tokio::test]
async fn serve_keeps_serving_when_its_log_disk_is_full() {
    serve_survives(disk_full()).await;
}

#[test]
fn serve_as_in_a_shell_pipeline_whose_reader_stops_after_one_byte() {
    // The failing input of the report, as a shell runs it; the pipeline's status is connd's.
    let d = AtomicDir::new(&refs(&files("5432")));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("connd.sock");
    let script =
        "set -o pipefail; \"$0\" serve --config-dir \"$1\" --socket \"$2\" 2>&1 >/dev/null | head -c 1 >/dev/null";
    let mut shell = Killed(
        Command::new("bash")
            .args(["-c", script, connd_bin()])
            .arg(d.path())
            .arg(&socket)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash runs"),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        until_answer(&socket, "/readyz", "").await;
        // More log lines after the reader has gone: a SIGHUP reload.
        let connd = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .find(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmd.starts_with(connd_bin().as_bytes())
                    && String::from_utf8_lossy(&cmd).contains(socket.to_str().unwrap())
            })
            .expect("the serving connd");
        for _ in 0..3 {
            kill(Pid::from_raw(connd), Signal::SIGHUP).unwrap();
            let metrics = until_answer(&socket, "/metrics", "connd_log_write_failures_total").await;
            assert!(!metrics.is_empty());
        }
        // Still alive, still serving, and ends as asked.
        until_answer(&socket, "/v1/env", "5432").await;
        kill(Pid::from_raw(connd), Signal::SIGTERM).unwrap();
    });
    assert_eq!(exit_of(&mut shell), Some(0), "connd's exit code through pipefail");
}

/// `connd run` with stdout read line by line and stderr as given.
fn run_supervising(dir: &Path, stderr: Stdio) -> (Killed, std::sync::mpsc::Receiver<String>) {
    let script = "echo \"start port=$CHOREO_MAIN_DB_PORT\"; exec sleep 60";
    let mut child = connd()
        .args(["run", "--config-dir"])
        .arg(dir)
        .args(["--change-debounce", "50ms", "--stop-timeout", "5s", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("connd run starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    (Killed(child), rx)
}

#[track_caller]
fn expect_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(_) => panic!("no line with {needle:?}"),
        }
    }
}

#[test]
fn run_keeps_supervising_when_its_log_reader_is_gone() {
    for stderr in [reader_gone(), disk_full()] {
        let mut d = AtomicDir::new(&refs(&files("5432")));
        let (mut child, lines) = run_supervising(d.path(), stderr);
        expect_line(&lines, "start port=5432");
        // "values changed", "restarting the workload": each a failed log write.
        d.update(&refs(&files("6543")));
        expect_line(&lines, "start port=6543");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert_eq!(exit_of(&mut child), Some(143), "the workload's SIGTERM, passed on");
    }
}

/// A directory with one remote parameter, for a control plane that is not there.
fn remote_fixture() -> Fixture {
    Fixture::with(
        &component_yaml(&[("hr-connection", "service:/HRProject/users/v1/ad088/PUBLIC")]),
        &connection("19d2648b-d29c-4452-afdd-1b9311e81412", "hr-connection", &[("ConsumerKey", "{ remote: true }")]),
    )
}

#[test]
fn env_against_a_dead_control_plane_exits_69_whatever_stderr_is() {
    let fx = remote_fixture();
    for (what, stderr) in [("reader gone", reader_gone()), ("disk full", disk_full())] {
        let status = connd()
            .args(["env", "--config-dir"])
            .arg(fx.path())
            .args(["--control-plane", "http://127.0.0.1:9", "--startup-timeout", "1s"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(69), "stderr {what}: {status:?}");
    }
}

/// `connd ARGS` with stdout a pipe nobody reads: exit code and stderr.
fn into_a_closed_pipe(args: &[&str]) -> Run {
    connd().args(args).stdout(reader_gone()).stderr(Stdio::piped()).output().unwrap().into()
}

#[test]
fn printing_commands_end_quietly_when_the_reader_is_gone() {
    let example = format!("{}/config/example", env!("CARGO_MANIFEST_DIR"));
    for args in [
        vec!["man"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["check", "--config-dir", &example],
        vec!["env", "--config-dir", &example],
    ] {
        let out = into_a_closed_pipe(&args);
        assert_eq!((out.code, out.stderr.as_str()), (0, ""), "connd {args:?}: {out:?}");
    }
    // As a shell runs `connd man | head -1`.
    let out: Run = Command::new("bash")
        .args(["-c", "set -o pipefail; \"$0\" man | head -1", connd_bin()])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout.lines().count(), 1);
}

#[test]
fn output_onto_a_full_disk_is_an_error_that_says_so() {
    let example = format!("{}/config/example", env!("CARGO_MANIFEST_DIR"));
    let out: Run = connd().args(["env", "--config-dir", &example]).stdout(disk_full()).output().unwrap().into();
    assert_eq!(out.code, 1, "{out:?}");
    assert_contains(&out.stderr, &["connd: cannot write the output: No space left on device"]);
}

#[test]
fn output_with_stdout_closed_is_not_a_crash() {
    // A closed descriptor: the process starts with /dev/null in its place (Rust's runtime
    // opens it), so the output is simply lost, as with `>/dev/null`.
    let example = format!("{}/config/example", env!("CARGO_MANIFEST_DIR"));
    let out: Run = Command::new("sh")
        .args(["-c", "exec \"$0\" env --config-dir \"$1\" >&- 2>&-", connd_bin(), &example])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
}

// ---- what the logs look like ----

/// An update that makes the directory invalid with two problems, then waits until the
/// reloader has seen it.
async fn break_the_directory(dir: &mut AtomicDir, socket: &Path) {
    let mut bad = files("5432");
    bad[2].1 = bad[2].1.replace("visibility: project", "visiblity: project");
    dir.update(&refs(&bad));
    until_answer(socket, "/metrics", "connd_reloads_total{result=\"error\"} 1").await;
}

#[tokio::test]
async fn text_logs_in_a_file_have_no_colour_and_one_record_per_unindented_line() {
    let mut d = AtomicDir::new(&refs(&files("5432")));
    let log = serve_log_on(&mut d, &[], &[]).await;
    assert!(!log.contains('\x1b'), "colour codes in a log file:\n{log:?}");
    assert_contains(&log, &["reload{kind=Local}: reload failed, the last good values stay", "visiblity"]);
    for line in log.lines() {
        let starts_record = line.starts_with(|c: char| c.is_ascii_digit());
        assert!(
            starts_record || line.starts_with("  "),
            "a line that is neither a record nor indented: {line:?}\n{log}"
        );
    }
    let continuation = log.lines().find(|l| l.contains("visiblity")).unwrap();
    assert!(continuation.starts_with("  "), "the problem is a continuation of its record: {continuation:?}");
}

/// `connd env` against a dead control plane on a terminal (a pty from `script`): its
/// retry warnings, as the terminal shows them.
fn on_a_terminal(env: &[(&str, &str)]) -> String {
    let fx = remote_fixture();
    let line = format!(
        "'{}' env --config-dir '{}' --control-plane http://127.0.0.1:9 --startup-timeout 500ms",
        connd_bin(),
        fx.dir_arg()
    );
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_contains(&text, &["control plane"]);
    text
}

#[test]
fn colour_only_on_a_terminal_and_not_with_no_color() {
    assert!(on_a_terminal(&[]).contains("\x1b["), "no colour on a terminal");
    let plain = on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(!plain.contains('\x1b'), "colour despite NO_COLOR:\n{plain:?}");
}

#[tokio::test]
async fn json_logs_carry_the_problems_as_an_array() {
    let mut d = AtomicDir::new(&refs(&files("5432")));
    let log = serve_log_on(&mut d, &["--log-format", "json"], &[]).await;
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    }
    let failed: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"].as_str().is_some_and(|m| m.contains("reload failed")))
        .unwrap_or_else(|| panic!("no reload failure in:\n{log}"));
    let problems = failed["problems"].as_array().unwrap_or_else(|| panic!("no problems array: {failed}"));
    let typo = problems.iter().find(|p| p["message"].as_str().unwrap_or("").contains("visiblity")).expect("the typo");
    assert!(typo["file"].as_str().unwrap().ends_with("connections.yaml"), "{typo}");
    assert!(typo["line"].as_u64().is_some(), "{typo}");
    assert!(typo["fix"].as_str().is_some(), "{typo}");
}

#[test]
fn a_failed_command_s_json_error_carries_the_problems_and_its_text_is_one_record() {
    let f = Fixture::with(
        &component_yaml(&[("main-db", "database:pg/main")]),
        &connection("19d2648b-d29c-4452-afdd-1b9311e81412", "main-db", &[("Port", "1")])
            .replace("visibility: project", "visiblity: project"),
    );
    let out = f.run("check", &["--log-format", "json"]);
    assert_eq!(out.code, 78, "{out:?}");
    let line: serde_json::Value = serde_json::from_str(out.stderr.trim()).expect("one JSON line");
    assert_eq!(line["exit_code"], 78);
    let problems = line["problems"].as_array().unwrap_or_else(|| panic!("{line}"));
    assert!(problems.iter().any(|p| p["message"].as_str().unwrap_or("").contains("visiblity")), "{line}");
    let text = f.run("check", &[]);
    assert_eq!(text.code, 78);
    let mut lines = text.stderr.lines();
    assert!(lines.next().unwrap().starts_with("connd: invalid connection config"), "{text:?}");
    assert!(lines.all(|l| l.starts_with("  ")), "continuation lines indented:\n{}", text.stderr);
}

/// `serve` on `dir`, logging into a file, while the directory breaks.
async fn serve_log_on(dir: &mut AtomicDir, extra: &[&str], env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let socket = tmp.path().join("connd.sock");
    let mut child = Killed(
        connd()
            .args(["serve", "--config-dir"])
            .arg(dir.path())
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    until_answer(&socket, "/readyz", "").await;
    break_the_directory(dir, &socket).await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(exit_of(&mut child), Some(0));
    std::fs::read_to_string(&log).unwrap()
}

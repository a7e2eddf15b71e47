//! `serve` and `run` keeping files across their life (docs/files.md): a file changed,
//! re-moded or deleted behind connd's back is put back; files an earlier connd process
//! wrote and no longer planned are removed after a restart; a `file:` source caught
//! mid-write is read once its writer is done.

use crate::support::kubelet::AtomicDir;
use crate::support::*;
use connd::serve::api::client::request;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const DB: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `pred` holds for the file's content and mode (None: absent).
#[track_caller]
fn file_until(path: &Path, what: &str, pred: impl Fn(Option<(&str, u32)>) -> bool) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).ok();
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
        if pred(text.as_deref().map(|t| (t, mode))) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{} never {what}; it is {text:?}, mode {mode:o}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `kind: File` at /conf/app.env holding the database's host.
fn app_env_dir(host: &str) -> AtomicDir {
    let conns = IDENTITY.to_owned() + &connection(DB, "orders-db", &[("HostName", host)]);
    let file = "kind: File\npath: /conf/app.env\nformat: dotenv\nvalues:\n  - name: DB_HOST\n    \
                valueFrom: { connectionRef: { name: orders-db, key: HostName } }\n";
    AtomicDir::new(&[
        ("component.yaml", &component_yaml(&[("orders-db", "database:pg/orders")])),
        ("c.yaml", &conns),
        ("file.yaml", file),
    ])
}

fn rendered(t: Option<(&str, u32)>) -> bool {
    t.is_some_and(|(text, mode)| text == "DB_HOST='db1'\n" && mode == 0o600)
}

#[tokio::test]
async fn serve_puts_back_a_file_changed_re_moded_or_deleted_behind_its_back_on_sighup() {
    let dir = app_env_dir("db1");
    let root = tempfile::tempdir().unwrap();
    // No re-scan or refresh during the test: only SIGHUP can bring the file back.
    let args =
        ["--files-root", &root.path().display().to_string(), "--rescan-interval", "10m", "--refresh-interval", "10m"];
    let daemon = Daemon::start(dir.path(), &args, &[]);
    daemon.ready().await;
    let app = root.path().join("conf/app.env");
    file_until(&app, "was rendered", rendered);
    type Drift = fn(&Path);
    let drifts: [(&str, Drift); 3] = [
        ("overwritten", |p| std::fs::write(p, "DB_HOST=evil\n").unwrap()),
        ("re-moded", |p| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap()),
        ("deleted", |p| std::fs::remove_file(p).unwrap()),
    ];
    for (what, drift) in drifts {
        drift(&app);
        // Nothing puts it back by itself.
        std::thread::sleep(Duration::from_millis(300));
        let mode = std::fs::metadata(&app).map(|m| m.permissions().mode() & 0o7777).ok();
        let text = std::fs::read_to_string(&app).ok();
        assert!(!rendered(text.as_deref().zip(mode)), "{what}: {text:?} {mode:?}");
        daemon.signal(Signal::SIGHUP);
        file_until(&app, &format!("was put back once {what}"), rendered);
    }
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["behind connd's back: put back as rendered"]);
}

#[test]
fn run_puts_back_a_deleted_or_re_moded_file_at_the_next_re_scan() {
    let dir = app_env_dir("db1");
    let root = tempfile::tempdir().unwrap();
    let args = ["--files-root", &root.path().display().to_string(), "--rescan-interval", "200ms"];
    let mut s = Supervised::start(dir.path(), &args, "echo started; while :; do sleep 0.05; done").patience(PATIENCE);
    s.expect("started");
    let app = root.path().join("conf/app.env");
    file_until(&app, "was rendered", rendered);
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o644)).unwrap();
    file_until(&app, "was re-moded back", rendered);
    std::fs::remove_file(&app).unwrap();
    file_until(&app, "was put back", rendered);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

/// `kind: File` documents, one per name, each a dotenv file under /conf.
fn kind_files(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            (
                format!("{n}.yaml"),
                format!("kind: File\npath: /conf/{n}.env\nformat: dotenv\nvalues:\n  - name: A\n    value: {n}\n"),
            )
        })
        .collect()
}

fn serve_files(dir: &Path, root: &Path) -> Daemon {
    Daemon::start(dir, &["--files-root", &root.display().to_string()], &[])
}

#[tokio::test]
async fn a_restarted_serve_removes_the_files_an_earlier_one_wrote_and_no_longer_plans() {
    let files = kind_files(&["app", "gone", "taken"]);
    let mut fx = Fixture::with(&component_yaml(&[]), "");
    for (name, text) in &files {
        fx = fx.file(name, text);
    }
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("conf");
    let first = serve_files(fx.path(), root.path());
    first.ready().await;
    for n in ["app", "gone", "taken"] {
        file_until(&conf.join(format!("{n}.env")), "was rendered", |t| t.is_some());
    }
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait().0, 0);

    // While no connd runs: two files leave the plan, and someone makes one of them theirs.
    std::fs::remove_file(fx.join("gone.yaml")).unwrap();
    std::fs::remove_file(fx.join("taken.yaml")).unwrap();
    std::fs::write(conf.join("taken.env.new"), "MINE=1\n").unwrap();
    std::fs::rename(conf.join("taken.env.new"), conf.join("taken.env")).unwrap();
    let user_file = conf.join("user.env");
    std::fs::write(&user_file, "USER=1\n").unwrap();

    let second = serve_files(fx.path(), root.path());
    second.ready().await;
    file_until(&conf.join("gone.env"), "was removed by the new process", |t| t.is_none());
    assert_eq!(std::fs::read_to_string(conf.join("taken.env")).unwrap(), "MINE=1\n", "another's file stays");
    assert_eq!(std::fs::read_to_string(&user_file).unwrap(), "USER=1\n", "a file connd never wrote stays");
    assert_eq!(std::fs::read_to_string(conf.join("app.env")).unwrap(), "A='app'\n");
    second.signal(Signal::SIGTERM);
    let (code, stderr) = second.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_contains(&stderr, &["gone.env", "file no longer planned: removed"]);
}

#[tokio::test]
async fn serve_is_not_ready_before_its_files_are_written() {
    let dir = app_env_dir("db1");
    let root = tempfile::tempdir().unwrap();
    // A file where the folder must go: the values resolve, the file cannot be written.
    std::fs::write(root.path().join("conf"), "not a folder").unwrap();
    let daemon = serve_files(dir.path(), root.path());
    let start = Instant::now();
    loop {
        let env = request(&daemon.socket, http::Method::GET, "/v1/env").await;
        if env.is_ok_and(|a| a.status == 200) {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the values never resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readyz = request(&daemon.socket, http::Method::GET, "/readyz").await.unwrap();
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert_contains(&readyz.text(), &["the files are not written yet"]);
    let probe = connd().args(["probe", "--socket"]).arg(&daemon.socket).output().unwrap();
    assert_ne!(probe.status.code(), Some(0), "probe said ready");

    std::fs::remove_file(root.path().join("conf")).unwrap();
    daemon.ready().await;
    file_until(&root.path().join("conf/app.env"), "was rendered", rendered);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait().0, 0);
}

/// A `file:` source truncated, then written a moment later by a tool that does not rename
/// (`tool > file`: the shell truncates before the tool writes): never served empty.
#[tokio::test]
async fn a_file_source_written_in_place_is_read_once_its_writer_is_done() {
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("password");
    std::fs::write(&key, "first-value").unwrap();
    let conns =
        connection(DB, "orders-db", &[("HostName", "db1")]) + &format!("  Password: {{ file: {} }}\n", key.display());
    let fx = Fixture::with(&component_yaml(&[("orders-db", "database:pg/orders")]), &conns);
    let daemon = Daemon::start(fx.path(), &["--rescan-interval", "10m", "--refresh-interval", "10m"], &[]);
    daemon.ready().await;
    let password = || async {
        let a = request(&daemon.socket, http::Method::GET, "/v1/env").await.unwrap();
        let env: serde_json::Value = serde_json::from_str(&a.text()).unwrap();
        env["CHOREO_ORDERS_DB_PASSWORD"].as_str().unwrap_or("(absent)").to_owned()
    };
    assert_eq!(password().await, "first-value");
    let writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.15 > '{0}'; printf second-value > '{0}'", key.display()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let now = password().await;
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == "second-value" || start.elapsed() > PATIENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = writer.wait_with_output();
    assert_eq!(
        seen,
        ["first-value", "second-value"],
        "a value between the writer's truncation and its write was served"
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait().0, 0);
}

/// A file bind-mounted onto the target (a Kubernetes `subPath`, `docker -v file:file`):
/// rename(2) over a mount point fails with EBUSY; the message says what it means.
#[test]
fn a_target_that_is_a_mount_point_says_mount_the_folder() {
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let target = conf.join("app.env");
    std::fs::write(&target, "old\n").unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    let mounted = std::process::Command::new("mount").arg("--bind").arg(outside.path()).arg(&target).status();
    assert!(mounted.is_ok_and(|s| s.success()), "cannot bind-mount: this test needs root (CI runs as root)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&target);
    let dir = app_env_dir("db1");
    let out =
        connd().args(["render", "--config-dir"]).arg(dir.path()).arg("--files-root").arg(root.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{stderr}");
    assert_contains(&stderr, &["app.env", "is a mount point", "mount the folder instead"]);
    assert!(!stderr.contains("os error 16"), "{stderr}");
}

/// The same under `run`: the workload restarts once, on the finished value, never on an
/// empty one (the wait is `--change-debounce`, 250 ms by default).
#[test]
fn run_restarts_once_on_a_file_source_written_in_place() {
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("password");
    std::fs::write(&key, "first-value").unwrap();
    let conns =
        connection(DB, "orders-db", &[("HostName", "db1")]) + &format!("  Password: {{ file: {} }}\n", key.display());
    let fx = Fixture::with(&component_yaml(&[("orders-db", "database:pg/orders")]), &conns);
    let script = "echo \"start password=[$CHOREO_ORDERS_DB_PASSWORD]\"; while :; do sleep 0.05; done";
    let mut s = Supervised::start(fx.path(), &["--rescan-interval", "10m", "--refresh-interval", "10m"], script)
        .patience(PATIENCE);
    s.expect("start password=[first-value]");
    let writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.1 > '{0}'; printf second-value > '{0}'", key.display()))
        .status()
        .unwrap();
    assert!(writer.success());
    s.expect("start password=[second-value]");
    s.collect(Duration::from_millis(500));
    let starts: Vec<&String> = s.seen().iter().filter(|l| l.starts_with("start ")).collect();
    assert_eq!(starts.len(), 2, "{}", s.transcript());
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait(), 143, "{}", s.transcript());
}

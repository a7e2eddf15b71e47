//! The outage cache (docs/cache.md) on the real binary: a fake control plane switched off
//! (or failing) between runs, and every reason a cache is not trusted.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::{assert_contains, connd, hr_remote, Daemon, Fixture, Run, HR_ID};
use connd::serve::api::client::request;
use http::Method;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VAR: &str = "CHOREO_HR_CONNECTION_CONSUMERKEY";

/// A cache folder and a key file of 32 bytes, in a temporary folder of their own.
struct CacheDir {
    tmp: tempfile::TempDir,
}

impl CacheDir {
    fn new() -> CacheDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("key"), [7u8; 32]).unwrap();
        CacheDir { tmp }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn key(&self) -> PathBuf {
        self.tmp.path().join("key")
    }

    /// The one cache file written.
    fn file(&self) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.remove(0)
    }

    fn args(&self) -> Vec<String> {
        let dir = self.dir().display().to_string();
        let key = self.key().display().to_string();
        vec!["--cache-dir".into(), dir, "--cache-key-file".into(), key]
    }
}

/// `connd <sub>` on `f` against `url` (CA `ca`), with `extra` flags; a one-second startup
/// timeout, so that an outage is seen quickly.
fn connd_on(f: &Fixture, url: &str, ca: &Path, sub: &[&str], extra: &[String]) -> Run {
    connd()
        .arg(sub[0])
        .arg("--config-dir")
        .arg(f.path())
        .args(["--control-plane", url, "--startup-timeout", "1s"])
        .arg("--ca-file")
        .arg(ca)
        .args(extra)
        .args(&sub[1..])
        .output()
        .expect("connd runs")
        .into()
}

fn exec_echo() -> Vec<&'static str> {
    vec!["exec", "--", "sh", "-c", "echo \"key=$CHOREO_HR_CONNECTION_CONSUMERKEY\""]
}

/// A fake control plane that has answered one `exec` (`key-1`), the cache it left, and the
/// fake's URL and CA, kept for the runs after it is switched off.
fn cached_once(f: &Fixture, cache: &CacheDir) -> (FakeControlPlane, String, PathBuf) {
    let cp = FakeControlPlane::start(false);
    cp.script(HR_ID, vec![Reply::ok("1", &[("ConsumerKey", "key-1")])]);
    let ca = cache.tmp.path().join("ca.pem");
    std::fs::copy(cp.ca_file(), &ca).unwrap();
    let first = connd_on(f, &cp.url(), &ca, &exec_echo(), &cache.args());
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout, "key=key-1\n");
    let url = cp.url();
    (cp, url, ca)
}

#[test]
fn an_exec_restarted_during_an_outage_starts_on_its_cached_values() {
    let (f, cache) = (hr_remote(), CacheDir::new());
    let (cp, url, ca) = cached_once(&f, &cache);
    let mode = std::fs::metadata(cache.file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the cache file is private");
    let on_disk = std::fs::read(cache.file()).unwrap();
    assert!(!on_disk.windows(5).any(|w| w == b"key-1"), "the cache holds no value in clear");
    drop(cp); // the control plane is switched off

    let restarted = connd_on(&f, &url, &ca, &exec_echo(), &cache.args());
    assert_eq!(restarted.code, 0, "{restarted:?}");
    assert_eq!(restarted.stdout, "key=key-1\n");
    assert_contains(
        &restarted.stderr,
        &["the control plane is unavailable: starting on the values cached ", " ago, until it answers"],
    );

    // Without the cache, the same outage fails closed as before.
    let without = connd_on(&f, &url, &ca, &exec_echo(), &[]);
    assert_eq!(without.code, 69, "{without:?}");
    assert_eq!(without.stdout, "");
}

#[test]
fn a_revoked_client_does_not_start_on_the_cache() {
    let (f, cache) = (hr_remote(), CacheDir::new());
    let (cp, url, ca) = cached_once(&f, &cache);
    let before = std::fs::read(cache.file()).unwrap();
    for status in [401, 403] {
        cp.script(HR_ID, vec![Reply::Status(status)]);
        let refused = connd_on(&f, &url, &ca, &exec_echo(), &cache.args());
        assert_eq!(refused.code, 77, "{status}: {refused:?}");
        assert_eq!(refused.stdout, "", "{status}: the workload did not start");
        assert!(!refused.stderr.contains("starting on the values"), "{refused:?}");
    }
    assert_eq!(std::fs::read(cache.file()).unwrap(), before, "the last good cache is kept");
}

/// Runs `exec` during an outage with the cache as `spoil` left it: fails closed (69), says
/// `why`, and leaves the file as it was.
/// `spoil` may return another config directory to run on.
fn ignored(spoil: impl FnOnce(&Fixture, &CacheDir) -> (Option<Fixture>, Vec<String>), why: &[&str]) {
    let (f, cache) = (hr_remote(), CacheDir::new());
    let (cp, url, ca) = cached_once(&f, &cache);
    drop(cp);
    let (other, extra) = spoil(&f, &cache);
    let f = other.as_ref().unwrap_or(&f);
    let before = std::fs::read(cache.file()).unwrap();
    let run = connd_on(f, &url, &ca, &exec_echo(), &extra);
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(run.stdout, "", "no workload starts on an untrusted cache");
    let mut needles = vec!["the cache is not used"];
    needles.extend_from_slice(why);
    assert_contains(&run.stderr, &needles);
    assert_eq!(std::fs::read(cache.file()).unwrap(), before, "the cache file is left as it was");
}

fn same(_: &Fixture, cache: &CacheDir) -> (Option<Fixture>, Vec<String>) {
    (None, cache.args())
}

#[test]
fn a_tampered_cache_is_ignored() {
    ignored(
        |f, cache| {
            let mut bytes = std::fs::read(cache.file()).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(cache.file(), bytes).unwrap();
            same(f, cache)
        },
        &["it fails authentication: it was altered or damaged"],
    );
}

#[test]
fn a_cache_written_with_another_key_is_ignored() {
    ignored(
        |f, cache| {
            std::fs::write(cache.key(), [8u8; 40]).unwrap();
            same(f, cache)
        },
        &["it was written with another key (--cache-key-file)"],
    );
}

#[test]
fn a_cache_written_for_another_directory_is_ignored() {
    ignored(
        |f, cache| (Some(copy_dir(f.path())), cache.args()),
        &["it was written for config directory", "(project hr-project, component user-portal), not"],
    );
}

#[test]
fn a_cache_older_than_max_stale_is_ignored() {
    ignored(
        |f, cache| {
            std::thread::sleep(Duration::from_millis(2100));
            let (f, mut args) = same(f, cache);
            args.extend(["--max-stale".into(), "1s".into()]);
            (f, args)
        },
        &["old, older than --max-stale 1s"],
    );
}

#[test]
fn a_cache_of_a_newer_format_is_ignored() {
    ignored(
        |f, cache| {
            let bytes = std::fs::read(cache.file()).unwrap();
            let text = String::from_utf8_lossy(&bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()]).into_owned();
            let newer = text.replace("\"format\":1", "\"format\":2");
            assert_ne!(newer, text);
            let mut out = newer.into_bytes();
            out.extend_from_slice(&bytes[text.len()..]);
            std::fs::write(cache.file(), out).unwrap();
            same(f, cache)
        },
        &["it was written by a newer connd (format 2; this one reads 1)"],
    );
}

/// A new config directory holding `from`'s files.
fn copy_dir(from: &Path) -> Fixture {
    let to = Fixture::new();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(&entry.file_name().to_string_lossy())).unwrap();
    }
    to
}

#[test]
fn a_key_file_missing_empty_or_short_is_a_config_error_naming_it() {
    let f = hr_remote();
    let cache = CacheDir::new();
    let cp = FakeControlPlane::start(false);
    cp.script(HR_ID, vec![Reply::ok("1", &[("ConsumerKey", "key-1")])]);
    let key = cache.key().display().to_string();
    let cases: [(&[u8], &str); 2] =
        [(b"", "it is empty"), (&[1u8; 31], "it holds 31 bytes, fewer than the 32 a key needs")];
    for (content, why) in cases {
        std::fs::write(cache.key(), content).unwrap();
        let run = connd_on(&f, &cp.url(), cp.ca_file(), &exec_echo(), &cache.args());
        assert_eq!(run.code, 78, "{run:?}");
        assert_contains(&run.stderr, &[&format!("--cache-key-file {key}: {why}"), "head -c 32 /dev/urandom"]);
        assert_eq!(run.stdout, "");
    }
    std::fs::remove_file(cache.key()).unwrap();
    let run = connd_on(&f, &cp.url(), cp.ca_file(), &exec_echo(), &cache.args());
    assert_eq!(run.code, 78, "{run:?}");
    assert_contains(&run.stderr, &[&format!("--cache-key-file {key}: cannot read it: No such file")]);
}

#[test]
fn an_unwritable_cache_dir_is_a_warning_and_connd_runs_without_it() {
    let f = hr_remote();
    let cache = CacheDir::new();
    let cp = FakeControlPlane::start(false);
    cp.script(HR_ID, vec![Reply::ok("1", &[("ConsumerKey", "key-1")])]);
    // A folder under a regular file cannot be made, whoever runs the test (root too).
    let blocked = cache.key().join("cache").display().to_string();
    let key = cache.key().display().to_string();
    std::fs::write(cache.key(), [7u8; 32]).unwrap();
    let args = vec!["--cache-dir".into(), blocked, "--cache-key-file".into(), key];
    let run = connd_on(&f, &cp.url(), cp.ca_file(), &exec_echo(), &args);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "key=key-1\n");
    assert_contains(&run.stderr, &["--cache-dir cannot be written: running without the cache"]);
}

/// `serve` restarted during an outage is ready on the cache, says so in `/readyz` and
/// `/metrics`, and takes the control plane's values as soon as it answers.
#[tokio::test]
async fn serve_starts_on_the_cache_marked_stale_until_the_control_plane_answers() {
    let (f, cache) = (hr_remote(), CacheDir::new());
    let (cp, url, ca) = cached_once(&f, &cache);
    cp.script(HR_ID, vec![Reply::Status(503)]);
    let mut extra = vec!["--control-plane".to_owned(), url, "--ca-file".into(), ca.display().to_string()];
    extra.extend(cache.args());
    extra.extend(["--refresh-interval".into(), "1s".into()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let daemon = Daemon::start(f.path(), &extra, &[]);
    daemon.ready().await;
    let readyz = request(&daemon.socket, Method::GET, "/readyz").await.unwrap();
    let body = String::from_utf8_lossy(&readyz.body).into_owned();
    assert_contains(&body, &["\"stale\":true", "\"cache_age_seconds\"", "status 503"]);
    let metrics = request(&daemon.socket, Method::GET, "/metrics").await.unwrap();
    assert_contains(&String::from_utf8_lossy(&metrics.body), &["connd_cache_stale 1", "connd_ready 1"]);
    let env = request(&daemon.socket, Method::GET, "/v1/env").await.unwrap();
    assert_contains(&String::from_utf8_lossy(&env.body), &[&format!("\"{VAR}\":\"key-1\"")]);

    cp.script(HR_ID, vec![Reply::ok("2", &[("ConsumerKey", "key-2")])]);
    let start = Instant::now();
    loop {
        let env = request(&daemon.socket, Method::GET, "/v1/env").await.unwrap();
        if String::from_utf8_lossy(&env.body).contains("key-2") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the cached values were never replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let readyz = request(&daemon.socket, Method::GET, "/readyz").await.unwrap();
    assert!(!String::from_utf8_lossy(&readyz.body).contains("stale"), "{readyz:?}");
    let metrics = request(&daemon.socket, Method::GET, "/metrics").await.unwrap();
    assert_contains(
        &String::from_utf8_lossy(&metrics.body),
        &["connd_cache_stale 0", "connd_cache_writes_total{result=\"written\"}"],
    );
}

#[test]
fn run_restarted_during_an_outage_starts_its_workload_on_the_cached_values() {
    let (f, cache) = (hr_remote(), CacheDir::new());
    let (cp, url, ca) = cached_once(&f, &cache);
    drop(cp);
    let run = ["run", "--", "sh", "-c", "echo \"key=$CHOREO_HR_CONNECTION_CONSUMERKEY\""];
    let restarted = connd_on(&f, &url, &ca, &run, &cache.args());
    assert_eq!(restarted.code, 0, "{restarted:?}");
    assert_eq!(restarted.stdout, "key=key-1\n");
    assert_contains(&restarted.stderr, &["the control plane is unavailable: starting on the values cached"]);
}

/// `serve` with flags `extra` on `f`, stopped when it exits by itself: its code and stderr.
fn serve_until_exit(f: &Fixture, extra: &[String]) -> (i32, String) {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Daemon::start(f.path(), &extra, &[]).wait()
}

#[test]
fn serve_with_a_revoked_client_exits_77_whatever_the_cache_holds() {
    let (f, cache) = (hr_remote(), CacheDir::new());
    let (cp, url, ca) = cached_once(&f, &cache);
    cp.script(HR_ID, vec![Reply::Status(401)]);
    let mut extra = vec!["--control-plane".to_owned(), url, "--ca-file".into(), ca.display().to_string()];
    extra.extend(cache.args());
    extra.extend(["--startup-timeout".into(), "2s".into()]);
    let (code, stderr) = serve_until_exit(&f, &extra);
    assert_eq!(code, 77, "{stderr}");
    assert!(!stderr.contains("starting on the values"), "{stderr}");
}

#[tokio::test]
async fn serve_without_a_writable_cache_dir_counts_it_and_serves() {
    let f = hr_remote();
    let cache = CacheDir::new();
    let cp = FakeControlPlane::start(false);
    cp.script(HR_ID, vec![Reply::ok("1", &[("ConsumerKey", "key-1")])]);
    let blocked = cache.key().join("cache").display().to_string();
    let key = cache.key().display().to_string();
    let extra =
        ["--control-plane", &cp.url(), "--ca-file", &cp.ca_file().display().to_string()].map(str::to_owned).to_vec();
    let mut extra = extra;
    extra.extend(["--cache-dir".into(), blocked, "--cache-key-file".into(), key]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let daemon = Daemon::start(f.path(), &extra, &[]);
    daemon.ready().await;
    let metrics = request(&daemon.socket, Method::GET, "/metrics").await.unwrap();
    assert_contains(&String::from_utf8_lossy(&metrics.body), &["connd_cache_disabled 1", "connd_cache_stale 0"]);
}

/// A directory whose `HR_TOKEN` is the OAuth token of `hr-connection`, from the token
/// endpoint `/token` of `cp`.
fn token_fixture(cp: &FakeControlPlane) -> Fixture {
    let mut component = crate::support::component_yaml(&[("hr-connection", "thirdparty:svc/v1")]);
    component.push_str(
        "configurations:\n  env:\n    - name: HR_TOKEN\n      valueFrom:\n        \
         connectionRef: { name: hr-connection, key: AccessToken }\n",
    );
    let token_url = format!("{}/token", cp.url());
    Fixture::with(
        &component,
        &crate::support::oauth_connection(HR_ID, "hr-connection", &token_url, "portal", "s3cr3t", "basic"),
    )
}

fn token_reply(token: &str, expires_in: u64) -> Reply {
    let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#);
    Reply::raw_with(200, &[("content-type", "application/json")], &body)
}

/// A cached token serves a start while the token endpoint is down, until its own expiry;
/// a refused client never falls back.
#[test]
fn a_cached_token_starts_an_exec_until_it_expires_and_never_for_a_refused_client() {
    let cp = FakeControlPlane::start(false);
    let (f, cache) = (token_fixture(&cp), CacheDir::new());
    let echo = ["exec", "--", "sh", "-c", "echo \"token=$HR_TOKEN\""];
    cp.script("/token", vec![token_reply("tok-1", 3600)]);
    let first = connd_on(&f, &cp.url(), cp.ca_file(), &echo, &cache.args());
    assert_eq!((first.code, first.stdout.as_str()), (0, "token=tok-1\n"), "{first:?}");
    assert!(!std::fs::read(cache.file()).unwrap().windows(5).any(|w| w == b"tok-1"), "no token in clear");

    cp.script("/token", vec![Reply::Status(503)]);
    let down = connd_on(&f, &cp.url(), cp.ca_file(), &echo, &cache.args());
    assert_eq!((down.code, down.stdout.as_str()), (0, "token=tok-1\n"), "{down:?}");
    assert_contains(&down.stderr, &["a token endpoint is unavailable: starting on the values cached"]);

    cp.script("/token", vec![Reply::raw(401, r#"{"error":"invalid_client"}"#)]);
    let refused = connd_on(&f, &cp.url(), cp.ca_file(), &echo, &cache.args());
    assert_eq!((refused.code, refused.stdout.as_str()), (77, ""), "{refused:?}");

    // A token that expires in 1 s is cached with its expiry, and not used after it.
    cp.script("/token", vec![token_reply("tok-2", 1)]);
    let short = connd_on(&f, &cp.url(), cp.ca_file(), &echo, &cache.args());
    assert_eq!((short.code, short.stdout.as_str()), (0, "token=tok-2\n"), "{short:?}");
    std::thread::sleep(Duration::from_millis(2100));
    cp.script("/token", vec![Reply::Status(503)]);
    let expired = connd_on(&f, &cp.url(), cp.ca_file(), &echo, &cache.args());
    assert_eq!((expired.code, expired.stdout.as_str()), (69, ""), "{expired:?}");
    assert_contains(
        &expired.stderr,
        &["the cache is not used: its token for connection \"hr-connection\" has expired"],
    );
}

/// A bad key file is found where the directory needs no fetch too: the day it gains a
/// remote parameter is not the day to learn of it.
#[test]
fn a_bad_key_file_is_an_error_for_a_directory_with_nothing_to_fetch() {
    let cache = CacheDir::new();
    let key = cache.key().display().to_string();
    std::fs::write(cache.key(), [1u8; 31]).unwrap();
    let example = format!("{}/config/example", env!("CARGO_MANIFEST_DIR"));
    for command in [&["env"][..], &["exec"][..], &["render", "--files-root"][..]] {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        if command[0] == "render" {
            args.push(cache.key().parent().unwrap().join("files").display().to_string());
        }
        args.extend(["--config-dir".into(), example.clone()]);
        args.extend(cache.args());
        if command[0] == "exec" {
            args.extend(["--".into(), "true".into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::support::run(&refs);
        assert_eq!(out.code, 78, "{command:?}: {out:?}");
        assert_contains(
            &out.stderr,
            &[&format!("--cache-key-file {key}: it holds 31 bytes"), "head -c 32 /dev/urandom"],
        );
    }
}

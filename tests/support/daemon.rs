//! `connd serve` as a child process, for the tests that need the real binary.

use super::connd;
use connd::serve::api::client::request;
use http::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `connd serve`, killed if the test ends early.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    /// Holds the socket's directory (`run/` inside it).
    pub tmp: tempfile::TempDir,
}

impl Daemon {
    pub fn start(config_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/connd.sock");
        let child = connd()
            .args(["serve", "--config-dir"])
            .arg(config_dir)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("connd serve starts");
        Daemon { child, socket, tmp }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal");
    }

    pub async fn ready(&self) {
        assert!(ready_within(&self.socket, Duration::from_secs(10)).await, "connd serve never became ready");
    }

    /// Waits for the exit and returns its code and stderr.
    pub fn wait(mut self) -> (i32, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (status.code().unwrap_or(-1), err);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "connd serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server on `socket` answered `/readyz` with 200 within `patience`.
pub async fn ready_within(socket: &std::path::Path, patience: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Ok(a) = request(socket, Method::GET, "/readyz").await {
            if a.status == 200 {
                return true;
            }
        }
        if start.elapsed() >= patience {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

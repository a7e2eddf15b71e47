//! A real forward proxy for tests: Debian's `tinyproxy`, started on a free loopback port
//! with a generated config (optionally `BasicAuth` and a `ConnectPort` restriction), its
//! log in a temp dir so a test can see which requests and CONNECTs went through it.
//! Killed and reaped on drop. A missing `tinyproxy` is a panic saying how to install it,
//! never a silently skipped test (`.ci/run` installs it).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const INSTALL_HINT: &str = "install it: apt-get install tinyproxy";

/// How to configure one proxy.
#[derive(Default, Clone)]
pub struct Options {
    /// `BasicAuth user password`: every request must carry these credentials.
    pub basic_auth: Option<(String, String)>,
    /// `ConnectPort N`: CONNECT only to this port (any other is refused with 403).
    pub connect_port: Option<u16>,
}

pub struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Holds the config and the log.
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    pub fn start(options: Options) -> Tinyproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("tinyproxy.log");
        // A port found free may be taken before tinyproxy binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut conf = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\nMaxClients 50\n",
                log.display()
            );
            if let Some((user, password)) = &options.basic_auth {
                conf.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            if let Some(p) = options.connect_port {
                conf.push_str(&format!("ConnectPort {p}\n"));
            }
            let conf_path = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
            let mut child = match Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    panic!("cannot start tinyproxy: not found on PATH; {INSTALL_HINT}")
                }
                Err(e) => panic!("cannot start tinyproxy: {e}"),
            };
            let started = Instant::now();
            while started.elapsed() < READY_TIMEOUT {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Tinyproxy { child, port, log, _dir: dir };
                }
                if child.try_wait().expect("wait tinyproxy").is_some() {
                    break; // the port was taken: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy did not start; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, or with `user:password@` when given.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The request lines tinyproxy logged (`CONNECT 127.0.0.1:4433 HTTP/1.1`, `POST
    /// http://127.0.0.1:9/token HTTP/1.1`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("Request (file descriptor ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once("): ").map(|(_, request)| request.to_owned()))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

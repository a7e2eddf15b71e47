//! What the process benches share: ports, readiness, memory of a process, children
//! stopped when dropped, nginx, and `connd serve` with its proxy on one connection.

// Each bench includes this file and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls until `port` on loopback accepts.
pub fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child stopped by SIGTERM when dropped: nginx's master then stops its worker too
/// (SIGKILL would leave the worker running, holding the port).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// nginx from the configuration `conf` (written into `dir`, its prefix), once it listens
/// on `port`: the master, stopped when dropped, and the pid of its one worker (the
/// master's child), whose CPU and memory the benches read.
pub fn start_nginx(dir: &Path, conf: &str, port: u16) -> (Killed, u32) {
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args(["-c", path.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts (apt-get install nginx)");
    let master = child.id();
    wait_port(port);
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap();
    let worker = children.split_whitespace().next().expect("an nginx worker").parse().unwrap();
    (Killed(child), worker)
}

/// `bin serve` (warnings only, an empty environment) on a directory made in `dir/config`
/// of a component referencing the one connection `name` (`resourceRef` `resource`) and the
/// connections file `connections`, its proxy on a free loopback port: the process, stopped
/// when dropped, once that port accepts, and the port.
pub fn serve_proxy(dir: &Path, bin: &str, name: &str, resource: &str, connections: &str) -> (Killed, u16) {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let component = format!(
        "schemaVersion: 1.2\ndependencies:\n  connectionReferences:\n    - name: {name}\n      resourceRef: {resource}\n"
    );
    std::fs::write(config.join("component.yaml"), component).unwrap();
    std::fs::write(config.join("connections.yaml"), connections).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--log-level", "warn", "serve", "--config-dir"])
        .arg(&config)
        .arg("--socket")
        .arg(dir.join("connd.sock"))
        .args(["--proxy-listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .spawn()
        .expect("connd starts");
    wait_port(port);
    (Killed(child), port)
}

/// A connections file with the connection `name` to the plain-http `upstream` port, whose
/// proxy adds `Authorization: <token>`.
pub fn header_connection(name: &str, upstream: u16, token: &str) -> String {
    format!(
        "kind: Component\nproject: hr-project\nname: portal\n---\nkind: Connection\n\
         id: 19d2648b-d29c-4452-afdd-1b9311e81412\nname: {name}\nproject: hr-project\n\
         proxy: {{ headers: {{ Authorization: Tok }} }}\n\
         parameters:\n  ServiceURL: http://127.0.0.1:{upstream}\n  Tok: \"{token}\"\n"
    )
}

/// The connd the benches run: `CONND_BENCH_BIN`, else the one cargo built.
pub fn bench_bin() -> String {
    std::env::var("CONND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_connd").to_owned())
}

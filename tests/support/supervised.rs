//! The one driver of a running `connd run` (or a wrapper of it, such as `unshare` or
//! `script`): its stdout and stderr read line by line on two threads, waited on with a
//! patience, and killed if the test ends early.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long an awaited line or exit may take unless [`Supervised::patience`] says otherwise.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(10);

/// A running `connd run` and everything it printed so far.
pub struct Supervised {
    /// The process started: `connd` itself, or the wrapper that runs it.
    pub child: Child,
    /// Its stdin when the command was given a pipe; dropped by [`Supervised::wait`].
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything read so far, stdout lines as they are, stderr lines prefixed `err: `.
    seen: Vec<String>,
    /// How long any awaited event may take before the test fails.
    patience: Duration,
}

/// `connd run --config-dir DIR ARGS... -- sh -c SCRIPT`, stdin from `/dev/null`.
pub fn run_command(dir: &Path, args: &[&str], script: &str) -> Command {
    let mut cmd = crate::support::connd();
    cmd.arg("run").arg("--config-dir").arg(dir).args(args).args(["--", "sh", "-c", script]);
    cmd.stdin(Stdio::null());
    cmd
}

impl Supervised {
    /// Starts [`run_command`]`(dir, args, script)`.
    pub fn start(dir: &Path, args: &[&str], script: &str) -> Supervised {
        Supervised::spawn(run_command(dir, args, script))
    }

    /// Starts `cmd` with stdout and stderr piped (stdin as `cmd` has it).
    pub fn spawn(mut cmd: Command) -> Supervised {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("connd starts");
        let (tx, lines) = mpsc::channel();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let tx2 = tx.clone();
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        std::thread::spawn(move || {
            BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(format!("err: {l}"))))
        });
        Supervised { stdin: child.stdin.take(), child, lines, seen: Vec::new(), patience: DEFAULT_PATIENCE }
    }

    /// The same driver, waiting up to `patience` for each awaited event.
    pub fn patience(mut self, patience: Duration) -> Supervised {
        self.patience = patience;
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal connd");
    }

    /// Every line read so far, stderr lines prefixed `err: `.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    pub fn transcript(&self) -> String {
        self.seen.join("\n")
    }

    /// Waits for a line containing `needle`; returns it.
    #[track_caller]
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + self.patience;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    panic!("no line with {needle:?} within {:?}; output so far:\n{}", self.patience, self.transcript())
                }
            }
        }
    }

    /// The number after `key=` in the first line containing `key=`.
    #[track_caller]
    pub fn pid_after(&mut self, key: &str) -> i32 {
        let line = self.expect(&format!("{key}="));
        let rest = line.split(&format!("{key}=")).nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("a pid in {line:?}"))
    }

    /// Reads whatever arrives during `period`.
    pub fn collect(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
    }

    /// Reads what arrives until `done` holds, for at most the patience.
    #[track_caller]
    pub fn until(&mut self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + self.patience;
        while !done() {
            assert!(Instant::now() < deadline, "never {what}; output so far:\n{}", self.transcript());
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(line);
            }
        }
    }

    /// Waits until `n` lines contain `needle`.
    #[track_caller]
    pub fn expect_count(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + self.patience;
        while self.count(needle) < n {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("fewer than {n} lines with {needle:?}; output so far:\n{}", self.transcript()),
            }
        }
    }

    /// How many lines read so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.seen.iter().filter(|l| l.contains(needle)).count()
    }

    pub fn write_stdin(&mut self, text: &str) {
        self.stdin.as_mut().expect("stdin open").write_all(text.as_bytes()).expect("write stdin");
    }

    /// Closes stdin, waits for the exit and returns the code; all output has then been read.
    #[track_caller]
    pub fn wait(&mut self) -> i32 {
        self.stdin.take();
        let deadline = Instant::now() + self.patience;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.collect(Duration::from_millis(200));
                return status.code().unwrap_or_else(|| panic!("connd itself died: {status:?}\n{}", self.transcript()));
            }
            assert!(Instant::now() < deadline, "connd did not exit; output so far:\n{}", self.transcript());
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(10)) {
                self.seen.push(line);
            }
        }
    }

    /// SIGTERM, then the exit code; all output has then been read.
    #[track_caller]
    pub fn stop(&mut self) -> i32 {
        self.signal(Signal::SIGTERM);
        self.wait()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

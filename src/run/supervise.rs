//! Run mode: connd stays the workload's parent. It starts the workload with the same
//! environment `exec` would give it, forwards the signals an orchestrator or a terminal
//! sends, reaps every child (see `reap`), and when the workload's variables change it
//! restarts the workload or sends it a signal. connd exits with the workload's code, or
//! 128+N when the workload died of signal N.
//!
//! The workload leads a process group of its own. Whenever it stops (a restart, connd's
//! SIGTERM, its own exit), what is left of the group gets the stop signal and SIGKILL
//! after the stop timeout, as systemd's `KillMode=control-group` does (docs/commands.md): a
//! restart never leaves the old workload's children holding a port.
//!
//! Boundary: the values arrive on a `watch` channel (the reloader's business); which
//! changes count is `changes`' business. Runs on a current-thread runtime: spawning and
//! reaping then never interleave.

use super::terminal::Terminal;
use crate::error::{Class, Classify};
use crate::exec::{self, ExecError};
use crate::run::changes::{Changes, Env, Timing};
use crate::run::reap::{self, Reaper};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The signals connd passes on to the workload (docs/commands.md).
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// What the workload is told when its variables change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop it (stop signal, SIGKILL after the stop timeout) and start it again.
    Restart,
    /// Send it this signal: for workloads that re-read a rendered file.
    Signal(Signal),
    /// Nothing: the workload asks the local API itself.
    None,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub on_change: OnChange,
    /// What the workload gets when only rendered files changed (docs/files.md).
    pub on_file_change: OnChange,
    /// Asks the workload to stop before a restart.
    pub stop_signal: Signal,
    /// How long a stopping workload gets before SIGKILL, on restart and after SIGTERM.
    pub stop_timeout: Duration,
    pub timing: Timing,
    /// Forwarded signals go to the workload's whole process group, so a shell script's
    /// children hear them too; otherwise to its main process only. (The workload leads
    /// a group of its own either way, and what is left of that group when the workload
    /// stops is stopped too.)
    pub forward_to_group: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("{0}")]
    Spawn(ExecError),
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
}

impl Classify for SuperviseError {
    fn class(&self) -> Class {
        match self {
            SuperviseError::Spawn(e) => e.class(),
            SuperviseError::Signals(_) => Class::Internal,
        }
    }
}

/// Runs `argv` under supervision until it exits for good; returns connd's exit code.
/// The current value of `values` is what the first workload starts with. `signals`
/// is created by the caller as early as it can, so that none is missed.
pub async fn supervise(
    argv: &[OsString],
    inherited: Vec<(OsString, OsString)>,
    values: watch::Receiver<Env>,
    settings: &Settings,
    signals: Forwarded,
    file_changes: Option<tokio::sync::mpsc::Receiver<()>>,
) -> Result<u8, SuperviseError> {
    // Listening for SIGCHLD before the first spawn, so that no exit is missed.
    let reaper = Reaper::new().map_err(SuperviseError::Signals)?;
    let first = values.borrow().clone();
    // The workload always leads a process group of its own (so that what it leaves
    // behind can be stopped with it), and so needs the terminal's foreground.
    let terminal = Terminal::foreground();
    let spawner = Spawner { argv, inherited, forward_to_group: settings.forward_to_group, terminal };
    let child = spawner.spawn(&first)?;
    let (_changes, changed) = match settings.on_change {
        OnChange::None => (None, None),
        OnChange::Restart | OnChange::Signal(_) => {
            let (task, rx) = Changes::spawn(values, first.clone(), settings.timing);
            (Some(task), Some(rx))
        }
    };
    let supervisor = Supervisor {
        settings,
        spawner,
        reaper,
        signals,
        child,
        values_now: first,
        kill_at: None,
        restart_with: None,
        stopping: false,
    };
    supervisor.run(changed, file_changes).await
}

/// The supervision's state, which every event reads and changes.
struct Supervisor<'a> {
    settings: &'a Settings,
    spawner: Spawner<'a>,
    reaper: Reaper,
    signals: Forwarded,
    child: Child,
    /// The variables the running workload has: a restart for files keeps them.
    values_now: Env,
    /// When set, the workload gets SIGKILL at that moment.
    kill_at: Option<Instant>,
    /// A restart in progress: the workload was asked to stop and starts again with these.
    restart_with: Option<Env>,
    /// SIGTERM was received: whatever happens next, connd ends with the workload.
    stopping: bool,
}

impl Supervisor<'_> {
    /// Handles each event in turn until the workload exits for good.
    async fn run(
        mut self,
        mut changed: Option<tokio::sync::mpsc::Receiver<Env>>,
        mut file_changes: Option<tokio::sync::mpsc::Receiver<()>>,
    ) -> Result<u8, SuperviseError> {
        loop {
            tokio::select! {
                status = self.reaper.wait(self.child.pid) => {
                    if let Some(code) = self.exited(reap::exit_code(status)).await? {
                        return Ok(code);
                    }
                }
                sig = self.signals.recv() => self.forward(sig),
                () = sleep_until(self.kill_at) => self.kill_late(),
                Some(env) = recv(&mut changed) => self.values_changed(env),
                Some(()) = recv(&mut file_changes) => self.files_changed(),
            }
        }
    }

    /// The workload exited with `code`: what is left of its group is stopped, then it
    /// starts again for a restart under way (`None`), else its code is connd's.
    async fn exited(&mut self, code: u8) -> Result<Option<u8>, SuperviseError> {
        // What is left of its group stops with it, within the same stop timeout
        // when a stop was asked for (systemd's KillMode=control-group).
        let deadline = self.kill_at.take().unwrap_or_else(|| Instant::now() + self.settings.stop_timeout);
        let stop = self.settings.stop_signal;
        if let Some(sig) = stop_group(&mut self.reaper, &mut self.signals, self.child.pid, stop, deadline).await {
            if self.restart_with.take().is_some() {
                tracing::info!(signal = sig.as_str(), "restart cancelled: connd ends with the workload");
            }
        }
        let Some(env) = self.restart_with.take() else { return Ok(Some(code)) };
        tracing::info!(exit_code = code, "the workload stopped; starting it with the new values");
        self.kill_at = None;
        self.child = self.spawner.spawn(&env)?;
        self.values_now = env;
        Ok(None)
    }

    /// Passes `sig` on; SIGTERM also stops the workload for good.
    fn forward(&mut self, sig: Signal) {
        tracing::debug!(signal = sig.as_str(), "forwarding");
        self.child.signal(sig);
        if sig == Signal::SIGTERM {
            self.stopping = true;
            self.kill_at.get_or_insert(Instant::now() + self.settings.stop_timeout);
        }
        if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) && self.restart_with.take().is_some() {
            tracing::info!(signal = sig.as_str(), "restart cancelled: connd ends with the workload");
        }
    }

    /// The stop timeout passed: SIGKILL to the whole group, so that nothing of a
    /// workload being stopped stays.
    fn kill_late(&mut self) {
        tracing::warn!(timeout = ?self.settings.stop_timeout, "the workload did not stop in time; sending SIGKILL");
        self.child.kill_group();
        self.kill_at = None;
    }

    /// The workload's variables changed: `--on-change` says what it gets.
    fn values_changed(&mut self, env: Env) {
        if self.stopping {
            return;
        }
        match self.settings.on_change {
            OnChange::Restart => {
                if let Err(e) = self.spawner.check(&env) {
                    tracing::error!(error = %e, "not restarting the workload, it keeps its current values");
                } else if self.restart_with.replace(env).is_none() {
                    tracing::info!(signal = self.settings.stop_signal.as_str(), "restarting the workload");
                    self.stop_for_restart();
                }
            }
            OnChange::Signal(sig) => {
                tracing::info!(signal = sig.as_str(), "signalling the workload");
                self.child.signal(sig);
            }
            OnChange::None => {}
        }
    }

    /// Only rendered files changed: `--on-file-change` says what the workload gets.
    fn files_changed(&mut self) {
        if self.stopping || self.restart_with.is_some() {
            return;
        }
        match self.settings.on_file_change {
            OnChange::Restart => {
                tracing::info!(signal = self.settings.stop_signal.as_str(), "files changed; restarting the workload");
                self.restart_with = Some(self.values_now.clone());
                self.stop_for_restart();
            }
            OnChange::Signal(sig) => {
                tracing::info!(signal = sig.as_str(), "files changed; signalling the workload");
                self.child.signal(sig);
            }
            OnChange::None => {}
        }
    }

    /// Asks the workload to stop, SIGKILL after the stop timeout; `restart_with` is set.
    fn stop_for_restart(&mut self) {
        self.child.signal(self.settings.stop_signal);
        self.kill_at = Some(Instant::now() + self.settings.stop_timeout);
    }
}

/// Stops what is left of the process group `group` once its leader has exited: the
/// stop signal, then SIGKILL at `deadline`, reaping meanwhile, until no process of the
/// group is left. A process that left the group (`setsid`, `setpgid`) is out of reach.
/// Returns the signal, if any, that asked connd itself to end meanwhile (it is passed
/// on to the group).
async fn stop_group(
    reaper: &mut Reaper,
    signals: &mut Forwarded,
    group: Pid,
    stop: Signal,
    deadline: Instant,
) -> Option<Signal> {
    reaper.reap_orphans();
    if !group_alive(group) {
        return None;
    }
    tracing::info!(signal = stop.as_str(), "stopping what the workload left running in its process group");
    let _ = killpg(group, stop);
    let mut ended_by = None;
    let mut killed = false;
    // Members that are not connd's children send no SIGCHLD here: poll, briefly.
    let poll = Duration::from_millis(20);
    loop {
        reaper.reap_orphans();
        if !group_alive(group) {
            return ended_by;
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = tokio::time::sleep_until(deadline), if !killed => {
                tracing::warn!("processes of the workload's group did not stop in time; sending SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                killed = true;
            }
            sig = signals.recv() => {
                let _ = killpg(group, sig);
                if ends_startup(sig) {
                    ended_by = Some(sig);
                }
            }
        }
        // A process that even SIGKILL does not end (stuck in the kernel) is left behind
        // rather than holding connd forever.
        if killed && Instant::now() > deadline + Duration::from_secs(5) {
            tracing::warn!("processes of the workload's group survive SIGKILL; leaving them");
            return ended_by;
        }
    }
}

/// Whether any process is left in `group` (a zombie counts until it is reaped). One
/// that connd may not signal is out of its reach, and counts as gone.
fn group_alive(group: Pid) -> bool {
    killpg(group, None).is_ok()
}

/// Signals that end connd when there is no workload yet to pass them to.
pub fn ends_startup(sig: Signal) -> bool {
    matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(item) => Some(item),
            // The publisher is gone: values are final, nothing more will change.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The workload's command and the environment it inherits besides its variables.
struct Spawner<'a> {
    argv: &'a [OsString],
    inherited: Vec<(OsString, OsString)>,
    /// Forwarded signals go to the workload's whole group, not only to its leader.
    forward_to_group: bool,
    /// The terminal whose foreground each new group gets, given back when the spawner is
    /// dropped.
    terminal: Option<Terminal>,
}

impl Spawner<'_> {
    /// Whether the kernel would take `vars` (the workload's environment with them, and
    /// its arguments): checked before a running workload is stopped for them.
    fn check(&self, vars: &Env) -> Result<(), ExecError> {
        let env = exec::child_env(self.inherited.iter().cloned(), vars);
        exec::check_workload(self.argv, &env)
    }

    fn spawn(&self, vars: &Env) -> Result<Child, SuperviseError> {
        let Some(command) = self.argv.first() else { return Err(SuperviseError::Spawn(ExecError::NoCommand)) };
        let env = exec::child_env(self.inherited.iter().cloned(), vars);
        let path = exec::find_command(command, &env).map_err(SuperviseError::Spawn)?;
        exec::check_workload(self.argv, &env).map_err(SuperviseError::Spawn)?;
        // With a `pre_exec` hook std starts the child with glibc's execvp, which runs a
        // file the kernel refuses (ENOEXEC) with /bin/sh instead: refuse it here, as the
        // kernel and `exec` do.
        if super::deathsig::kernel_refuses(&path) {
            let refused = std::io::Error::from_raw_os_error(nix::libc::ENOEXEC);
            return Err(SuperviseError::Spawn(exec::spawn_failure(command, &path, &refused)));
        }
        let mut cmd = std::process::Command::new(&path);
        cmd.arg0(command).args(&self.argv[1..]).env_clear().envs(env);
        cmd.process_group(0);
        super::deathsig::die_with_parent(&mut cmd);
        // std starts the child with an empty signal mask and default dispositions, and the
        // handle is dropped without waiting: the reaper alone collects the exit.
        let child = cmd.spawn().map_err(|e| SuperviseError::Spawn(exec::spawn_failure(command, &path, &e)))?;
        let pid = Pid::from_raw(child.id() as i32);
        tracing::debug!(pid = pid.as_raw(), "started the workload");
        // Its group exists even if it exited already: nothing reaps it before this.
        if let Some(terminal) = &self.terminal {
            terminal.hand_to(pid);
        }
        Ok(Child { pid, forward_to_group: self.forward_to_group })
    }
}

/// The workload's main process, which leads a process group of its own (its pid is
/// the group's id).
struct Child {
    pid: Pid,
    /// Signals go to the whole process group the child leads.
    forward_to_group: bool,
}

impl Child {
    fn signal(&self, sig: Signal) {
        // The pid cannot have been reused: it stays a zombie until the reaper takes it.
        let sent = if self.forward_to_group { killpg(self.pid, sig) } else { kill(self.pid, sig) };
        if let Err(e) = sent {
            tracing::debug!(signal = sig.as_str(), "not delivered: {}", e.desc());
        }
    }

    /// SIGKILL to every process of the group.
    fn kill_group(&self) {
        if let Err(e) = killpg(self.pid, Signal::SIGKILL) {
            tracing::debug!("SIGKILL not delivered: {}", e.desc());
        }
    }
}

/// One listener per forwarded signal.
pub struct Forwarded {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Forwarded {
    /// Installs the handlers (inside a runtime). Until then a signal keeps its default
    /// action, which for PID 1 is to be ignored.
    pub fn new() -> std::io::Result<Forwarded> {
        let streams = FORWARDED
            .iter()
            .map(|&sig| Ok((sig, tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig as i32))?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Forwarded { streams })
    }

    /// The next signal received. Cancel-safe.
    pub async fn recv(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}

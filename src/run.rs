//! `connd run` as the binary calls it: the reloader keeps the values current, the
//! supervisor runs the workload on them, and, with `--socket`, the local API serves the
//! same snapshot so that the workload can ask for fresh tokens.
//!
//! Boundary: wiring and lifecycle only. Change detection is the reloader's (`watch`),
//! which changes count is `changes`', the process work is `supervise`'s.

use crate::api::auth::Allow;
use crate::api::server::{self, ApiStateParts};
use crate::changes::Env;
use crate::cli::RunArgs;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::source::Tokens;
use crate::supervise::{self, Forwarded, SuperviseError};
use crate::watch::{ReloadConfig, Reloader};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long API requests in flight get once the workload has exited.
const API_GRACE: Duration = Duration::from_secs(1);

/// The binary's `run`: returns the workload's exit code (or 128+N).
pub fn command(args: &RunArgs) -> anyhow::Result<u8> {
    // Fail fast, with the message `exec` would give, on a directory that cannot work.
    crate::resolve::plan(&args.config.config_dir, &args.config.options())?;
    // One thread: spawning (std's fork/exec) and reaping (`waitpid(-1)`) must never run
    // at the same time, or a failed spawn's own wait could find its child gone.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run(args: &RunArgs) -> anyhow::Result<u8> {
    // First of all: a SIGTERM while values are fetched must end connd, even as PID 1.
    let mut signals = Forwarded::new().map_err(SuperviseError::Signals)?;
    let sources = Arc::new(crate::remote::Remote::new(&args.config.remote, true)?);
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);
    let mut reload = ReloadConfig::new(&args.config, args.refresh_interval, args.rescan_interval);
    if args.socket.is_none() {
        reload.tokens = Tokens::Mapped;
    }
    let reloader = Reloader::start(reload, sources.clone(), metrics.clone(), until(stop.clone()));
    let server = match &args.socket {
        Some(path) => {
            let listener = server::bind(path, args.socket_mode, args.socket_group)?;
            tracing::info!(socket = %path.display(), "serving");
            let parts = ApiStateParts { store: reloader.store().clone(), sources: sources.clone(), metrics };
            let allow = Allow::new(args.allow_uid.clone(), args.allow_gid.clone());
            Some(tokio::spawn(server::serve(listener, parts, allow, API_GRACE, until(stop.clone()))))
        }
        None => None,
    };

    let result = async {
        let first = tokio::select! {
            first = first_resolution(reloader.subscribe(), args.config.remote.startup_timeout) => first?,
            code = startup_signal(&mut signals) => return Ok(code),
        };
        let (env_tx, env_rx) = watch::channel(first);
        let _forward = Forward(tokio::spawn(forward_env(reloader.subscribe(), env_tx)));
        let inherited = std::env::vars_os().collect();
        Ok(supervise::supervise(&args.command, inherited, env_rx, &args.settings(), signals).await?)
    }
    .await;

    let _ = stop_tx.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    reloader.stopped().await;
    sources.shutdown();
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Waits for the first full resolution. A permanent failure (a config error, a refusal)
/// ends the wait at once; a transient one is retried by the reloader until `timeout`.
async fn first_resolution(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    timeout: Duration,
) -> Result<Env, SuperviseError> {
    let wait = async {
        loop {
            let s = snapshots.borrow_and_update().clone();
            if let Some((env, _)) = s.env() {
                return Ok(Arc::new(env.clone()));
            }
            if let Some(f) = s.failure.as_ref().filter(|f| f.exit_code != crate::exit::UNAVAILABLE) {
                return Err(SuperviseError::Startup { message: f.message.clone(), exit_code: f.exit_code });
            }
            if snapshots.changed().await.is_err() {
                return Err(SuperviseError::Startup {
                    message: "the reloader stopped before the first resolution".into(),
                    exit_code: crate::exit::UNAVAILABLE,
                });
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => {
            let s = snapshots.borrow().clone();
            let cause = s.failure.as_ref().map_or("the first resolution is still running", |f| f.message.as_str());
            Err(SuperviseError::Startup {
                message: format!("no complete set of values after {}s: {cause}", timeout.as_secs_f32()),
                exit_code: crate::exit::UNAVAILABLE,
            })
        }
    }
}

/// Completes with 128+N when a signal that ends connd arrives before the workload runs.
async fn startup_signal(signals: &mut Forwarded) -> u8 {
    loop {
        let sig = signals.recv().await;
        if supervise::ends_startup(sig) {
            tracing::info!(signal = sig.as_str(), "stopping before the workload started");
            return 128 + sig as i32 as u8;
        }
    }
}

/// Passes every published set of variables on; `changes` compares them.
async fn forward_env(mut snapshots: watch::Receiver<Arc<Snapshot>>, env: watch::Sender<Env>) {
    while snapshots.changed().await.is_ok() {
        let s = snapshots.borrow_and_update().clone();
        if let Some((vars, _)) = s.env() {
            env.send_replace(Arc::new(vars.clone()));
        }
    }
}

/// The forwarding task, stopped with the supervisor that reads it.
struct Forward(JoinHandle<()>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

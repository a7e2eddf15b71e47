//! Process signals as futures: one `shutdown()` for SIGTERM/SIGINT, the SIGHUP stream
//! that asks for a reload, and `ignore_stray()` for the signals a daemon has no use for.
//! Only the command layer asks for these (`serve::run` takes SIGHUP only when its
//! settings say so), so that library code and in-process tests never depend on
//! process-wide signal state.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Completes on the first SIGTERM or SIGINT. Handlers are installed on the call, so
/// call it early: a signal before that keeps its default action.
pub fn shutdown() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
    })
}

/// SIGHUP deliveries.
pub fn hangups() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

/// Makes SIGUSR1, SIGUSR2 and SIGALRM harmless to a daemon that has no use for them:
/// their default action ends the process, and a stray one (a mistaken `kill -USR1`, a
/// tool signalling every process of a container) must not take `serve` or the webhook
/// down. A handler stays installed once made (tokio never uninstalls one), so the
/// dropped streams leave the signals caught and ignored.
pub fn ignore_stray() -> std::io::Result<()> {
    for kind in [SignalKind::user_defined1(), SignalKind::user_defined2(), SignalKind::alarm()] {
        drop(signal(kind)?);
    }
    Ok(())
}

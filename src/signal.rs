//! Process signals as futures: one `shutdown()` for SIGTERM/SIGINT, and the SIGHUP
//! stream that asks for a reload. Only the command layer asks for these (`serve::run`
//! takes SIGHUP only when its settings say so), so that library code and in-process
//! tests never depend on process-wide signal state.

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

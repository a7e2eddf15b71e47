//! The systemd notification protocol (`sd_notify`): datagrams such as `READY=1` sent to
//! the socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without that variable every call does nothing, as under any other supervisor.
//!
//! The messages are the `sd-notify` crate's [`NotifyState`]s; the datagram is sent here, not
//! by its `notify`, which reads `NOTIFY_SOCKET` from the process environment at every call
//! (connd takes it once, as a setting), cannot reach an abstract `@name` socket, and ends
//! every message with a newline that a datagram does not need.

use sd_notify::NotifyState;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier for the socket `NOTIFY_SOCKET` names, if any; a socket that cannot be
    /// used is logged once and ignored, since notification is advisory.
    pub fn new(notify_socket: Option<&str>) -> Notifier {
        let Some(name) = notify_socket.filter(|s| !s.is_empty()) else { return Notifier { target: None } };
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
            None => SocketAddr::from_pathname(Path::new(name)),
        };
        match (UnixDatagram::unbound(), addr) {
            (Ok(socket), Ok(addr)) => Notifier { target: Some((socket, addr)) },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, socket = ?name, "NOTIFY_SOCKET cannot be used, no notifications will be sent");
                Notifier { target: None }
            }
        }
    }

    /// Sends `message` (`KEY=VALUE` lines joined by `\n`) as one datagram; a failure is
    /// logged and otherwise ignored.
    pub fn notify(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(error = %e, message = ?message, "cannot notify the service manager");
            }
        }
    }

    /// `READY=1`: startup (or a reload) finished.
    pub fn ready(&self) {
        self.notify(&NotifyState::Ready.to_string());
    }

    /// `RELOADING=1` with the monotonic timestamp that `Type=notify-reload` requires.
    pub fn reloading(&self) {
        let now = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
        self.notify(&format!("{}\n{now}", NotifyState::Reloading));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.notify(&NotifyState::Stopping.to_string());
    }
}

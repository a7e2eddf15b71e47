//! The systemd notification protocol (`sd_notify`): datagrams such as `READY=1` sent to
//! the socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without that variable every call does nothing, as under any other supervisor.

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

    pub fn notify(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(error = %e, message = ?message, "cannot notify the service manager");
            }
        }
    }

    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `RELOADING=1` with the monotonic timestamp that `Type=notify-reload` requires.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }
}

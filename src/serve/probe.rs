//! `connd probe`: asks `/readyz` of the server on a socket; exit 0 only when it answers
//! 200. Meant for exec probes in a pod, where no HTTP client can reach a Unix socket.

use crate::error::{Class, Classify};
use crate::serve::api::client::{self, ClientError};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Not a `source`: the client's message already ends with its cause, which would
    /// otherwise be printed twice in the chain.
    #[error("{0}")]
    Client(ClientError),
    #[error("not ready ({status}): {body}")]
    NotReady { status: u16, body: String },
    /// The server is there, but does not let this probe's uid in: readiness is unknown.
    #[error(
        "refused (403): the server does not allow this probe's uid {uid} (readiness unknown); \
         run the probe as an allowed uid, or start connd with --allow-uid {uid}"
    )]
    Refused { uid: u32 },
    #[error("no answer within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

impl From<ClientError> for ProbeError {
    fn from(e: ClientError) -> Self {
        ProbeError::Client(e)
    }
}

/// No ready server on the socket: what a probe reports, whatever the cause.
impl Classify for ProbeError {
    fn class(&self) -> Class {
        Class::Unavailable
    }
}

/// Asks the server on `socket` whether it is ready, waiting at most `timeout`.
pub async fn probe(socket: &Path, timeout: Duration) -> Result<(), ProbeError> {
    let ask = client::request(socket, http::Method::GET, "/readyz");
    let answer = tokio::time::timeout(timeout, ask).await.map_err(|_| ProbeError::Timeout(timeout))??;
    if answer.status == http::StatusCode::OK {
        return Ok(());
    }
    if answer.status == http::StatusCode::FORBIDDEN {
        return Err(ProbeError::Refused { uid: nix::unistd::geteuid().as_raw() });
    }
    Err(ProbeError::NotReady { status: answer.status.as_u16(), body: answer.text().trim().to_owned() })
}

pub fn command(socket: &Path, timeout: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(probe(socket, timeout))?;
    Ok(())
}

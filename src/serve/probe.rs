//! `connd probe`: asks `/readyz` of the server on a socket; exit 0 only when it answers
//! 200. Meant for exec probes in a pod, where no HTTP client can reach a Unix socket.

use crate::cli::ProbeArgs;
use crate::serve::api::client::{self, ClientError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("not ready ({status}): {body}")]
    NotReady { status: u16, body: String },
    #[error("no answer within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

pub async fn probe(args: &ProbeArgs) -> Result<(), ProbeError> {
    let ask = client::request(&args.socket, http::Method::GET, "/readyz");
    let answer = tokio::time::timeout(args.timeout, ask).await.map_err(|_| ProbeError::Timeout(args.timeout))??;
    if answer.status == http::StatusCode::OK {
        return Ok(());
    }
    Err(ProbeError::NotReady { status: answer.status.as_u16(), body: answer.text().trim().to_owned() })
}

pub fn command(args: &ProbeArgs) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(probe(args))?;
    Ok(crate::exit::OK)
}

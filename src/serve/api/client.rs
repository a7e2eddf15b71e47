//! A minimal client for the local API over its Unix socket: `connd probe` uses it, and
//! so can tests and scripts. One request per connection.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the request to {} failed: {source}", path.display())]
    Http { path: PathBuf, source: hyper::Error },
}

/// What the API answered. Its Debug leaves the body out: a 200 body holds values.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes redacted>", self.body.len()))
            .finish()
    }
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(socket: &Path, method: Method, target: &str) -> Result<Answer, ClientError> {
    let http = |source| ClientError::Http { path: socket.to_path_buf(), source };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect { path: socket.to_path_buf(), source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    // The connection is driven alongside the request and dropped with it.
    let exchange = async {
        let req = Request::builder()
            .method(method)
            .uri(target)
            .header(http::header::HOST, "connd")
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let res = sender.send_request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    };
    tokio::pin!(exchange);
    tokio::select! {
        answer = &mut exchange => answer.map_err(http),
        // A server that closes after answering (draining) ends the connection first;
        // the answer is then already on its way to `exchange`.
        ended = conn => match ended {
            Err(e) => Err(http(e)),
            Ok(()) => exchange.await.map_err(http),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answers_debug_shows_no_body() {
        let a = super::Answer {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"{\"DB_PASSWORD\":\"hunter2\"}"),
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter2") && shown.contains("bytes redacted"), "{shown}");
    }
}

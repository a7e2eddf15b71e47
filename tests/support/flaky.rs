//! An HTTP/1.1 upstream that closes kept-alive connections the way real servers do when
//! a client reuses one just as they give up on it (caddy#6452, kong#11160): the request
//! head arrives, and the server closes the connection without a byte of answer. Raw
//! TCP, so that the close is exactly that; on a thread and runtime of its own.
//!
//! Every answer is `200 {"n": N, "body_len": B}`, N counting the requests answered.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// When a kept-alive connection is given up.
#[derive(Clone, Copy, Debug)]
pub enum Closes {
    /// Every second request on a connection meets a close: only its first is answered.
    EveryReused,
    /// A request arriving on a connection idle longer than this meets a close (the
    /// server's idle timer fired as the request was on its way).
    IdleAfter(Duration),
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    answered: AtomicUsize,
    closed_on: AtomicUsize,
}

/// A running flaky upstream; dropping it stops it.
pub struct Flaky {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flaky {
    pub fn start(closes: Closes) -> Flaky {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = counts.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = stopped => {}
                    () = async {
                        while let Ok((stream, _)) = listener.accept().await {
                            c.connections.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(connection(stream, closes, c.clone()));
                        }
                    } => {}
                }
            });
            runtime.shutdown_background();
        });
        Flaky { addr, counts, stop: Some(stop), thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    /// Requests answered.
    pub fn answered(&self) -> usize {
        self.counts.answered.load(Ordering::SeqCst)
    }

    /// Requests whose head arrived and met a close instead of an answer.
    pub fn closed_on(&self) -> usize {
        self.counts.closed_on.load(Ordering::SeqCst)
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn connection(mut stream: TcpStream, closes: Closes, counts: Arc<Counts>) {
    let mut buf = Vec::new();
    let mut served = 0usize;
    let mut idle_since = Instant::now();
    loop {
        let Some(head_end) = read_head(&mut stream, &mut buf).await else { return };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let give_up = match closes {
            Closes::EveryReused => served > 0,
            Closes::IdleAfter(idle) => served > 0 && idle_since.elapsed() > idle,
        };
        if give_up {
            counts.closed_on.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        buf.drain(..head_end);
        while buf.len() < length {
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        let n = counts.answered.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!("{{\"n\":{n},\"body_len\":{length}}}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        served += 1;
        idle_since = Instant::now();
    }
}

/// Reads until `buf` holds a whole head; where it ends (after the blank line), or `None`
/// when the peer closed.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

//! The skeleton every fake server of the tests shares (the fake control plane, which also
//! plays token endpoints, and the proxy's upstream): a hyper HTTP/1.1 and HTTP/2 server on
//! `127.0.0.1:0`, over rustls or plain, on a thread and runtime of its own so that
//! synchronous tests can use it too, stopped and joined when dropped. What it answers is
//! the caller's function.

use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running fake server; dropping it stops the accept loop and ends open connections.
pub struct FakeServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    /// Serves on a fresh loopback port, over TLS with `tls` when given. `accepted` runs for
    /// every TCP connection, before its handshake (which may then fail); `answer` answers
    /// every request.
    pub fn start<A, F, B>(
        tls: Option<Arc<rustls::ServerConfig>>,
        accepted: impl Fn() + Send + 'static,
        answer: A,
    ) -> FakeServer
    where
        A: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            runtime.block_on(serve(listener, tls, accepted, answer, stopped));
            // Dropping the runtime ends connections still open (a slow reply, say).
            runtime.shutdown_background();
        });
        FakeServer { addr, stop: Some(stop), thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve<A, F, B>(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    accepted: impl Fn(),
    answer: A,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) where
    A: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        accepted();
        // Without it, Nagle's algorithm and delayed ACKs add 40 ms to replies.
        let _ = tcp.set_nodelay(true);
        let (acceptor, answer) = (acceptor.clone(), answer.clone());
        tokio::spawn(async move {
            let service = service_fn(answer);
            // HTTP/1.1, and HTTP/2 with prior knowledge or by ALPN (the proxy's h2 tests).
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    // A refused handshake (unknown CA, no client certificate) just ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let _ = http.serve_connection(TokioIo::new(tls), service).await;
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

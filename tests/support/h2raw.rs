//! A raw HTTP/2 client for the proxy's tests: frames written by hand, so a test can send
//! what a well-behaved client library refuses to (connection-specific header fields) and
//! see each frame the proxy answers with (RST_STREAM, GOAWAY), and when it closes.
//! Header blocks are HPACK literals without indexing or Huffman coding (RFC 7541 §6.2.2).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
/// RFC 9113 §7's PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: u32 = 1;

/// One frame read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// RST_STREAM's or GOAWAY's error code.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        Some(u32::from_be_bytes(self.payload.get(at..at + 4)?.try_into().ok()?))
    }

    /// A response HEADERS frame whose block starts with `:status: 200` (static index 8, the
    /// field a server's encoder writes first).
    pub fn is_ok_head(&self) -> bool {
        self.kind == HEADERS && self.payload.first() == Some(&0x88)
    }

    pub fn ends_stream(&self) -> bool {
        self.flags & END_STREAM != 0
    }
}

/// An HTTP/2 connection with prior knowledge, opened with the preface and empty SETTINGS.
pub struct H2 {
    tcp: TcpStream,
    next_stream: u32,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect to the proxy");
        tcp.write_all(PREFACE).await.unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        H2 { tcp, next_stream: 1 }
    }

    /// Sends a request head (`:method`, `:path`, `:authority` and `fields`) that ends the
    /// stream; its stream id.
    pub async fn request(&mut self, method: &str, path: &str, authority: &str, fields: &[(&str, &str)]) -> u32 {
        let mut block = Vec::new();
        for (name, value) in [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)]
            .into_iter()
            .chain(fields.iter().copied())
        {
            literal(&mut block, name, value);
        }
        let stream = self.next_stream;
        self.next_stream += 2;
        self.tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)).await.unwrap();
        stream
    }

    /// The next frame other than SETTINGS and PING (acknowledged as they come), or `None`
    /// once the peer closed; panics after `patience`.
    pub async fn next(&mut self, patience: Duration) -> Option<Frame> {
        loop {
            let frame = tokio::time::timeout(patience, self.read()).await.expect("a frame or the end in time")?;
            match frame.kind {
                SETTINGS if frame.flags & ACK == 0 => {
                    self.tcp.write_all(&self::frame(SETTINGS, ACK, 0, &[])).await.unwrap();
                }
                PING if frame.flags & ACK == 0 => {
                    let _ = self.tcp.write_all(&self::frame(PING, ACK, 0, &frame.payload)).await;
                }
                SETTINGS | PING => {}
                _ => return Some(frame),
            }
        }
    }

    /// Frames until one on `stream` ends it or resets it; that last frame and the head.
    pub async fn answer(&mut self, stream: u32, patience: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next(patience).await {
            if frame.stream != stream {
                continue;
            }
            let last = frame.kind == RST_STREAM || frame.ends_stream();
            frames.push(frame);
            if last {
                return frames;
            }
        }
        panic!("the connection closed before stream {stream} ended: {frames:?}");
    }

    async fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(Frame { kind: head[3], flags: head[4], stream, payload })
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A literal header field without indexing, new name, no Huffman (lengths under 127).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127, "short fields only");
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

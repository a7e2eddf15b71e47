//! Benchmark of a WebSocket through the egress proxy (run: `cargo bench --bench websocket`).
//!
//! What connd adds to each message of an open WebSocket at one client: an echo upstream
//! in this process (a thread per connection, RFC 6455 framing by hand) is reached direct
//! and through connd (`ws://127.0.0.1:PORT/ws-up/echo`, the handshake forwarded with the
//! connection's `Authorization`, then the two sides joined). A client in this process,
//! also framing by hand (masked frames, blocking sockets, `TCP_NODELAY`), sends a 64-byte
//! text message and waits for its echo, timing each round trip; rounds of messages
//! alternate direct and connd in the same run. Reported: median and p99 per message for
//! each way, and what connd adds (the median of per-round differences).
//! `CONND_BENCH_BIN=path` runs another connd build; `WS_MESSAGES=N` sets the messages per round.

#[path = "common/mod.rs"]
mod common;
use base64::Engine;
use common::{bench_bin, header_connection, serve_proxy, Killed};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

const ROUNDS: usize = 6;
const MESSAGE: [u8; 64] = [b'm'; 64];
const TOKEN: &str = "Bearer bench-access-token-0123456789abcdefghijklmno";
/// RFC 6455 §1.3's GUID, hashed with the client's key into `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The echo upstream; its port.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || echo(tcp));
        }
    });
    port
}

/// One upstream connection: the handshake answered, then every frame echoed unmasked.
fn echo(tcp: TcpStream) {
    tcp.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut key = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("sec-websocket-key") {
                key = value.trim().to_owned();
            }
        }
        if line == "\r\n" {
            break;
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let mut out = tcp;
    write!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .unwrap();
    while let Some((opcode, payload)) = read_frame(&mut reader) {
        if opcode == 8 || out.write_all(&frame(opcode, &payload, None)).is_err() {
            return;
        }
    }
}

/// A frame (FIN set) of `payload`, masked with `mask` (a client's) or not (a server's).
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    assert!(payload.len() < 126, "short messages only");
    out.push(masked | payload.len() as u8);
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The next frame's opcode and (unmasked) payload; `None` at the end.
fn read_frame(r: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).ok()?;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut ext = [0u8; 2];
        r.read_exact(&mut ext).ok()?;
        len = u64::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0u8; 8];
        r.read_exact(&mut ext).ok()?;
        len = u64::from_be_bytes(ext);
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        r.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).ok()?;
    if head[1] & 0x80 != 0 {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
    }
    Some((head[0] & 0x0f, payload))
}

/// A client WebSocket to `port` at `path`, handshake done.
fn connect(port: u16, path: &str) -> (TcpStream, BufReader<TcpStream>) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "no upgrade at {path}: {status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    (tcp, reader)
}

/// `n` messages, each sent and its echo awaited; the round trips in microseconds.
fn round_trips(socket: &mut (TcpStream, BufReader<TcpStream>), n: usize) -> Vec<f64> {
    let message = frame(1, &MESSAGE, Some([1, 2, 3, 4]));
    (0..n)
        .map(|_| {
            let start = Instant::now();
            socket.0.write_all(&message).unwrap();
            let (_, echoed) = read_frame(&mut socket.1).expect("an echo");
            let took = start.elapsed().as_secs_f64() * 1e6;
            assert_eq!(echoed, MESSAGE);
            took
        })
        .collect()
}

/// `connd serve` with one connection, `ws-up`, to the upstream, adding `authorization`.
fn connd(dir: &Path, upstream: u16) -> (Killed, u16) {
    serve_proxy(dir, &bench_bin(), "ws-up", "thirdparty:ws/v1", &header_connection("ws-up", upstream, TOKEN))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let n: usize = std::env::var("WS_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(5000);
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream();
    let (_connd, port) = connd(tmp.path(), up);
    let mut direct = connect(up, "/echo");
    let mut proxied = connect(port, "/ws-up/echo");
    round_trips(&mut direct, 500);
    round_trips(&mut proxied, 500);

    println!("WebSocket echo, one client, 64-byte messages, {n} per round, {ROUNDS} rounds alternated");
    println!("{:<8} {:>9} {:>9}", "way", "p50 us", "p99 us");
    let (mut all_direct, mut all_connd, mut added_p50, mut added_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let mut d = round_trips(&mut direct, n);
        let mut c = round_trips(&mut proxied, n);
        d.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        println!("{:<8} {:>9.1} {:>9.1}", "direct", quantile(&d, 0.5), quantile(&d, 0.99));
        println!("{:<8} {:>9.1} {:>9.1}", "connd", quantile(&c, 0.5), quantile(&c, 0.99));
        added_p50.push(quantile(&c, 0.5) - quantile(&d, 0.5));
        added_p99.push(quantile(&c, 0.99) - quantile(&d, 0.99));
        all_direct.extend(d);
        all_connd.extend(c);
    }
    all_direct.sort_by(f64::total_cmp);
    all_connd.sort_by(f64::total_cmp);
    added_p50.sort_by(f64::total_cmp);
    added_p99.sort_by(f64::total_cmp);
    println!(
        "all rounds: direct p50 {:.1} us, p99 {:.1} us; connd p50 {:.1} us, p99 {:.1} us",
        quantile(&all_direct, 0.5),
        quantile(&all_direct, 0.99),
        quantile(&all_connd, 0.5),
        quantile(&all_connd, 0.99)
    );
    println!(
        "connd adds per message (median of per-round differences): {:.1} us at p50, {:.1} us at p99",
        added_p50[ROUNDS / 2],
        added_p99[ROUNDS / 2]
    );
}

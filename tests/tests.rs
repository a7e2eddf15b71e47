//! The integration tests: one binary, one module per area. Each starts the real `connd`
//! binary or drives the library over real files, sockets and processes.

mod support;

/// The API's limits: header-read timeout, idle connections, the connection cap.
mod api_limits;
/// `check`, `env` and `exec` end to end on valid directories: names, formats, exec.
mod cli;
/// One invalid directory per config error, asserting the message a user reads.
mod config_errors;
/// Remote parameters from a fake control plane over TLS: answers, retries, CA, mTLS.
mod control_plane;
/// OAuth client-credentials tokens against a real OpenID provider.
mod oauth;
/// The egress proxy end to end: credentials, routing, streaming, refusals, metrics.
mod proxy;
/// Outbound HTTP through a real forward proxy (tinyproxy): CONNECT, NO_PROXY, credentials.
mod proxy_env;
/// The reloader on real files: kubelet updates, invalid updates, a source going down.
mod reload;
/// The reloader with a remote source: re-scans during an outage, file events.
mod reload_sources;
/// `run` supervising real processes: signals, exit codes, reaping, restarts on change.
mod run_mode;
/// `serve` in-process over a real socket: routes, errors, readiness, blocking queries, tokens.
mod serve;
/// `serve`'s lifecycle edges: SIGTERM during a reload, bad intervals, a dying reloader.
mod serve_lifecycle;
/// `serve` and `probe` as processes: signals, sd_notify, other uids, the socket file.
mod serve_process;
/// `serve` as a process with its real sources: control plane down and back, token
/// renewal on `/token`, refusals, and the `/metrics` counters of all that.
mod serve_remote;
/// TLS failures from real certificates: the cause and fix a user reads, tried once.
mod tls;
/// The token endpoint's odd answers from a scripted fake: leaks, codes, retries, renewal.
mod token_endpoint;

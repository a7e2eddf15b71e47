//! The integration tests: one binary, one module per area. Each starts the real `connd`
//! binary or drives the library over real files, sockets and processes.

/// Shared fixtures and helpers: config directories, the real binary, fake and real peers.
/// Test modules import from here only, never from each other.
mod support;

/// The API's limits: header-read timeout, idle connections, the connection cap.
mod api_limits;
/// The outage cache: restarts during an outage start on it; every untrusted cache is ignored.
mod cache;
/// `check`, `env` and `exec` end to end on valid directories: names, formats, exec.
mod cli;
/// One invalid directory per config error, asserting the message a user reads.
mod config_errors;
/// Config messages that suggest, warn on typos and never blame a correct line; `check`'s JSON.
mod config_messages;
/// Remote parameters from a fake control plane over TLS: answers, retries, CA, mTLS.
mod control_plane;
/// Retries until the startup timeout, the last attempt made at the deadline.
mod deadline;
/// The systemd files as installed by deploy/systemd/install; the unit's system-call filter.
mod deploy_systemd;
/// The docs/ reference pages: every page cited exists; src/ cites no file outside the repo.
mod docs;
/// `env --format dotenv` read back by python-dotenv, the real reader.
mod dotenv_readers;
/// `serve` and `run` non-dumpable: their memory closed to their own uid, the workload's not.
mod dumpable;
/// `exec`, `run` and `check` on what the kernel would refuse or cannot start: limits, #!, loaders.
mod exec_failures;
/// Faults of the README's fault matrix not shown elsewhere: a control plane turning slow,
/// garbled, refusing or throttling mid-flight, an invalid directory under `run`, a lost `file:` source.
mod faults;
/// Files (docs/files.md): every format against its real reader, atomic writes, escapes, and
/// `serve`/`run` keeping files current (kubelet swaps, token renewals, read-only targets).
mod files;
/// `serve` and `run` keeping files across their life: drift put back, restart leftovers
/// removed, a `file:` source caught mid-write read once finished.
mod files_keep;
/// A fleet on one control plane: replicas started together do not refresh in step.
mod fleet;
/// Kubernetes injection: `inject` on every kind and mode (kubernetes-validate), the webhook
/// over TLS (patches applied by jsonpatch), refusals, certificate rotation.
mod inject;
/// The loader fuzzed: mutated and random directories never panic, hang or lose a file name.
mod loader_fuzz;
/// `--metrics-listen` in `serve` and `run`: metrics and probes over TCP, never a value.
mod metrics_listen;
/// OAuth client-credentials tokens against a real OpenID provider.
mod oauth;
/// The egress proxy end to end: credentials, routing, streaming, refusals, metrics.
mod proxy;
/// Outbound HTTP through a real forward proxy (tinyproxy): CONNECT, NO_PROXY, credentials.
mod proxy_env;
/// A connection's own proxy port: routing, h2c and gRPC, bad ports, reloads, `check`.
mod proxy_ports;
/// The proxy's protocols with real peers: gRPC (grpcio), WebSocket (websockets), h2c (curl), SSE.
mod proxy_protocols;
/// The README's first directory, copied from its text, gives what the text says.
mod readme;
/// The reloader on real files: kubelet updates, invalid updates, a source going down.
mod reload;
/// `serve` and `run` as processes: a retargeted config-dir symlink, reload log lines.
mod reload_process;
/// The reloader with a remote source: re-scans during an outage, file events.
mod reload_sources;
/// `run` and the workload's process group: children stopped with it, SIGKILL, setsid.
mod run_group;
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
/// connd's own stderr and stdout failing (closed pipe, full disk); what logs look like.
mod streams;
/// TLS failures from real certificates: the cause and fix a user reads, tried once.
mod tls;
/// The token endpoint's odd answers from a scripted fake: leaks, codes, retries, renewal.
mod token_endpoint;
/// Values as written: YAML scalars and JSON numbers keep their text; nulls say quote it.
mod values_as_written;
/// Client authentication without a long-lived secret against the real OpenID provider:
/// signed assertions, mTLS, federated files, token exchange, resources, bad keys.
mod workload_identity;

//! connd gives a workload the values of its connections.
//!
//! A value travels down this list. Each folder uses only those above it, `http/`, `listen/`
//! and the leaves at the end, never one below it; `daemon` stands on `reload/` and
//! `files/` and names no door, so that `serve/` and `proxy/` make their listeners doors
//! of it; among the modes, `run` stands on `exec` and on `serve`'s API and metrics
//! listener, and `serve` on `output`. Only the command line knows clap.
//! - `config/`: reads the connection-config directory (kubelet-aware) and checks every
//!   document, collecting diagnostics that name file, line and fix; `config::model` is
//!   the validated model (`config::oauth` its OAuth settings), which also answers what a connection offers (its keys, which
//!   come from the control plane, whether it is OAuth) and, by its `Source` kind
//!   (value, file, control plane), where each value comes from; `config::scalar` keeps
//!   every value as written.
//! - `resolve`: identity, references and visibility, variable names: the `Plan`, whose
//!   files (docs/files.md) `fileplan` plans, checking templates with `template`.
//! - `source/`: where values come from, one backend per module behind the `Sources`
//!   seam. `values` reads the local ones and materialises the rest; `controlplane`
//!   (docs/control-plane.md) and `token_endpoint` (over `oauth`, the token cache, with
//!   `credentials`, an OAuth client's, read from the resolved parameters, and
//!   `client_auth`, one module per client authentication method) are the
//!   outbound backends, composed by `outbound` with `cache`, their last known good on
//!   disk for a start during an outage (docs/cache.md) (`Local` is the seam with none); `once`
//!   is the one resolution (plan → fetch → materialise) of `env`, `exec` and `run`'s start.
//! - `reload/`: the reloader that keeps a resolution current (file events from its
//!   `watcher`, re-scans, refreshes) and the `snapshot` it publishes, versioned per answer.
//! - `daemon`: the one assembly of the long-running parts `serve` and `run` share: the
//!   reloader, `files/`' keeper, and the doors (the API, the metrics listener, the
//!   proxy's listeners: each a `daemon::Door`), each optional, each owned and stopped
//!   the same way.
//! - then one of the modes: `exec` (the workload replaces connd); `run/` (the workload
//!   supervised as a child: `supervise`, `reap`, `terminal`, `changes`); `serve/` (the
//!   Unix-socket `api/` over the reloader, `sdnotify`, `probe`, which asks it, and
//!   `metrics_listen`, the TCP listener for scrapes and probes, used by `run` too).
//!   `output` renders `check` and `env`; `files/` the files of docs/files.md (planned with the
//!   rest, rendered per format, written atomically under `--files-root`, and kept
//!   current in `run` and `serve` by its `keep` task).
//!   `proxy/` (the egress proxy of docs/proxy.md, beside `serve/api/`, in `serve` and `run`):
//!   calls to `/<connection>/...` forwarded to its `ServiceURL` with its credentials.
//! - beside the modes, `inject/` (Kubernetes injection): one pod-template transformation
//!   from `connd.dev/` annotations, `inject` over manifest streams (with its YAML writer),
//!   and the admission webhook (on `listen/`'s accept loop) answering with the same pod.
//! - beside the path: `http/`, outbound HTTP, which the sources and the egress proxy
//!   use: the `client` and its proxy-aware connector (`connect`, `proxy`), TLS (`tls`,
//!   and `tls_fault`: TLS faults in words), URL policy (`url`), their `error`, and the
//!   `json` and `deadline` helpers; `listen/`, the local listeners every server shares
//!   (`socket` binding, the peer-credential check `auth`, the accept loop `conn` with its
//!   limits and drain).
//! - the top: `cli` (the flags), `commands` (flags → each layer's settings, the
//!   subcommands, and the walk from an error chain to its exit code), `docs`
//!   (completions and man pages from the flags), `stdout` (their output, where a
//!   reader that went away ends the command quietly); `main.rs` is the thin binary.
//! - leaves any layer may use: `error` (the `Class` of every error, and so exit codes,
//!   retrying and `/metrics` results), `exit` (the exit-code constants), `retry` (the one
//!   backoff and deadline rule: `Until` says who retries until when, `transient_status`
//!   which HTTP answers are worth it), `metrics`, `logging` (which lays out `config`'s
//!   diagnostics, and so is not for `config`), `secret`, `signal`, `duration`, `dotenv`
//!   (the quoting of a dotenv value, for `output` and `files/`), `template` (the template
//!   engine of files, for `fileplan` and `files/`).
//!
// Denied, not forbidden: `run::deathsig` alone allows it, for `pre_exec`.
#![deny(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod docs;
pub mod dotenv;
pub mod duration;
pub mod error;
pub mod exec;
pub mod exit;
pub mod fileplan;
pub mod files;
pub mod http;
pub mod inject;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod proxy;
pub mod reload;
pub mod resolve;
pub mod retry;
pub mod run;
pub mod secret;
pub mod serve;
pub mod signal;
pub mod source;
pub mod stdout;
pub mod template;

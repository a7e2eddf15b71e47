//! connd gives a workload the values of its connections.
//!
//! The path of a value, module by module:
//! - `config`: reads the connection-config directory (kubelet-aware) and checks every
//!   document, collecting diagnostics that name file, line and fix.
//! - `resolve`: identity, references, visibility and variable names: the `Plan`.
//! - `values`: reads local values and combines them with fetched ones: `Values`.
//! - `source`: the seam for remote values and tokens; `remote` implements it with
//!   `controlplane` (SPEC §5) and `oauth` (the token cache), over `http_client` + `tls`.
//! - `output`: `check` and `env` renderings; `exec`: the workload replaces connd.
//! - `snapshot`: the resolved state, versioned per answer; `watch`: the reloader that
//!   keeps it current (file events, re-scans, refreshes); `metrics`: its counters.
//! - `serve`: the Unix-socket API (`api`) over the reloader, with `signal` and
//!   `sdnotify` for its lifecycle; `probe` asks it whether it is ready.
//! - `proxy`: the egress proxy (SPEC §8): calls to `/<connection>/...` forwarded to the
//!   connection's `ServiceURL` with its credentials attached, in `serve` and `run`.
//! - `run`: run mode, the reloader and optionally the API around `supervise`, which
//!   keeps the workload as a child; `reap` collects every exited child; `changes`
//!   decides which value changes the workload must act on.
//! - `commands`: the subcommands; `cli`: their flags; `exit`: exit codes; `docs`:
//!   completions and man pages from the flags.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod docs;
pub mod exec;
pub mod exit;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod proxy;
pub mod reload;
pub mod resolve;
pub mod run;
pub mod secret;
pub mod serve;
pub mod signal;
pub mod source;

pub use exit::exit_code;

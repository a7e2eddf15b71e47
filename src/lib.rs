//! connd gives a workload the values of its connections.
//!
//! The path of a value, module by module:
//! - `config`: reads the connection-config directory (kubelet-aware) and checks every
//!   document, collecting diagnostics that name file, line and fix.
//! - `resolve`: identity, references, visibility and variable names: the `Plan`.
//! - `values`: reads local values and combines them with fetched ones: `Values`.
//! - `output`: `check` and `env` renderings; `exec`: the workload replaces connd.
//! - `supervise`: run mode, the workload as a supervised child; `reap` collects every
//!   exited child; `changes` decides which value changes the workload must act on.
//! - `commands`: the subcommands; `cli`: their flags; `exit`: exit codes.
#![forbid(unsafe_code)]

pub mod changes;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exec;
pub mod exit;
pub mod logging;
pub mod output;
pub mod reap;
pub mod resolve;
pub mod secret;
pub mod source;
pub mod supervise;
pub mod values;

pub use exit::exit_code;

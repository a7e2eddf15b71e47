//! The command line. Every setting is a flag with a `CONND_*` variable behind it; the
//! flag wins. Subcommands carry only the settings they use, so each `--help` is short.

use crate::output::Format;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "connd",
    version,
    about = "Gives a workload the values of its connections: URLs, keys, secrets and OAuth tokens",
    long_about = "Gives a workload the values of its connections: URLs, keys, secrets and OAuth tokens.\n\n\
        connd reads a connection-config directory (the component's component.yaml plus connection \
        descriptors), resolves the component's variables and hands them to the workload: \
        by exec, by supervising it, or over a local Unix socket.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config directory and print the resolved plan (secrets redacted)
    Check(CheckArgs),
    /// Resolve once and print the variables
    Env(EnvArgs),
    /// Resolve once, then replace connd with CMD, its variables set
    Exec(ExecArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format (logs go to stderr)
    #[arg(long, env = "CONND_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Least severe level logged: error, warn, info, debug or trace
    #[arg(long, env = "CONND_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: tracing::level_filters::LevelFilter,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The connection-config directory: component.yaml plus connection descriptors
    #[arg(long, env = "CONND_CONFIG_DIR", default_value = "/etc/connd", value_name = "DIR")]
    pub config_dir: PathBuf,
    /// The component's project (overrides the `kind: Component` document)
    #[arg(long, env = "CONND_PROJECT")]
    pub project: Option<String>,
    /// The component's name (overrides the `kind: Component` document)
    #[arg(long, env = "CONND_COMPONENT")]
    pub component: Option<String>,
    /// Prefix of default variable names; empty for none
    #[arg(long, env = "CONND_ENV_PREFIX", default_value = "CHOREO", value_name = "PREFIX")]
    pub env_prefix: String,
    /// Leave out variables from configGroupRef/configForm instead of failing
    #[arg(long, env = "CONND_IGNORE_UNSUPPORTED")]
    pub ignore_unsupported: bool,
}

impl ConfigArgs {
    pub fn options(&self) -> crate::resolve::Options {
        crate::resolve::Options {
            project: self.project.clone(),
            component: self.component.clone(),
            env_prefix: self.env_prefix.clone(),
            ignore_unsupported: self.ignore_unsupported,
            control_plane: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format: dotenv, json, or shell (`eval "$(connd env --format shell)"`)
    #[arg(long, env = "CONND_FORMAT", value_enum, default_value = "dotenv")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The command and its arguments, after `--`
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

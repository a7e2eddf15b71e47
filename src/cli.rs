//! The command line. Every setting is a flag with a `CONND_*` variable behind it; the
//! flag wins. Subcommands carry only the settings they use, so each `--help` is short.

use crate::output::Format;
use crate::supervise::OnChange;
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Supervise CMD: forward signals, reap orphans, restart or signal it when values change
    Run(RunArgs),
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

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// When the variables change: restart, signal:NAME (e.g. signal:SIGHUP), or none
    #[arg(long, env = "CONND_ON_CHANGE", default_value = "restart", value_parser = parse_on_change, value_name = "ACTION")]
    pub on_change: OnChange,
    /// The signal that asks the workload to stop before a restart
    #[arg(long, env = "CONND_STOP_SIGNAL", default_value = "SIGTERM", value_parser = parse_signal, value_name = "SIGNAL")]
    pub stop_signal: Signal,
    /// How long a stopping workload gets before SIGKILL (on restart, and after SIGTERM)
    #[arg(long, env = "CONND_STOP_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub stop_timeout: Duration,
    /// Delay each restart by a random time up to this, so a fleet does not restart at once
    #[arg(long, env = "CONND_RESTART_SPLAY", default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub restart_splay: Duration,
    /// Changes closer together than this count as one
    #[arg(long, env = "CONND_CHANGE_DEBOUNCE", default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub change_debounce: Duration,
    /// Give the workload its own process group and signal the whole group
    #[arg(long, env = "CONND_FORWARD_TO_GROUP")]
    pub forward_to_group: bool,
    /// The command and its arguments, after `--`
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

impl RunArgs {
    pub fn settings(&self) -> crate::supervise::Settings {
        crate::supervise::Settings {
            on_change: self.on_change,
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            timing: crate::changes::Timing { debounce: self.change_debounce, splay: self.restart_splay },
            forward_to_group: self.forward_to_group,
        }
    }
}

/// A duration as a number and a unit: `500ms`, `30s`, `2m`, `1h` (`0` alone is allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write a number and a unit, e.g. 500ms, 30s, 2m or 1h");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" if n == 0 => 0,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).map(Duration::from_secs).ok_or_else(bad)
}

/// A signal by name, with or without `SIG`, any case: `SIGHUP`, `hup`.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse().map_err(|_| format!("{text:?} is not a signal name: write e.g. SIGHUP, SIGUSR1 or TERM"))
}

/// `restart`, `none`, or `signal:NAME`.
pub fn parse_on_change(text: &str) -> Result<OnChange, String> {
    match text {
        "restart" => Ok(OnChange::Restart),
        "none" => Ok(OnChange::None),
        _ => match text.strip_prefix("signal:") {
            Some(sig) => parse_signal(sig).map(OnChange::Signal),
            None => Err(format!("{text:?} is not an action: write restart, signal:NAME (e.g. signal:SIGHUP) or none")),
        },
    }
}

//! The command line. Every setting is a flag with a `CONND_*` variable behind it; the
//! flag wins. Subcommands carry only the settings they use, so each `--help` is short.

use crate::duration::{parse_duration, parse_interval};
use crate::run::supervise::OnChange;
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
    /// Serve the values on a Unix socket, reloading them as they change
    Serve(ServeArgs),
    /// Exit 0 if the `connd serve` on the socket is ready (for exec probes)
    Probe(ProbeArgs),
    /// Resolve once, write the files (configurations.file, kind: File), then exit
    Render(RenderArgs),
    /// Add connd to the Kubernetes manifests of FILE (or stdin) whose pod templates opt in
    Inject(InjectArgs),
    /// Serve the mutating admission webhook that adds connd to pods as `inject` does
    Webhook(WebhookArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory
    Man {
        /// Write connd.1 and connd-COMMAND.1 here instead of printing connd.1
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log line format (logs go to stderr)
    #[arg(long, env = "CONND_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Least severe level logged: error, warn, info, debug or trace
    #[arg(long, env = "CONND_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: tracing::level_filters::LevelFilter,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Config directory")]
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
    /// Folder under which rendered files are written (each file's path is joined to it)
    #[arg(long, env = "CONND_FILES_ROOT", default_value = "/", value_name = "DIR")]
    pub files_root: PathBuf,
    /// Treat every warning about the directory (a misspelled key, a value a reader
    /// mangles) as an error: exit 78 instead of going on
    #[arg(long, env = "CONND_STRICT", value_parser = clap::builder::BoolishValueParser::new())]
    pub strict: bool,
    #[command(flatten)]
    pub outbound: OutboundArgs,
}

/// How connd reaches what it calls over the network (the outbound sources: the control
/// plane and the token endpoints; the egress proxy's upstreams share the TLS, proxy
/// and plain-http rules).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Control plane and TLS")]
pub struct OutboundArgs {
    /// Base URL of the control plane; needed for `remote: true` parameters
    #[arg(long, env = "CONND_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: Option<String>,
    /// File holding the bearer credential for the control plane; re-read when it changes
    #[arg(long, env = "CONND_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA certificates trusted for HTTPS (instead of the system's)
    #[arg(long, env = "CONND_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mTLS; needs --client-key
    #[arg(long, env = "CONND_CLIENT_CERT", value_name = "PATH", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert
    #[arg(long, env = "CONND_CLIENT_KEY", value_name = "PATH", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Allow plain http:// to hosts other than loopback (credentials then travel in clear)
    #[arg(long, env = "CONND_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// Ignore HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY: connect to every host directly
    #[arg(long, env = "CONND_NO_PROXY_ENV")]
    pub no_proxy_env: bool,
    /// How long to keep retrying an unavailable control plane or token endpoint at startup
    #[arg(long, env = "CONND_STARTUP_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub startup_timeout: Duration,
}

/// The outage cache of docs/cache.md (`env`, `exec`, `run`, `serve`, `render`): the last
/// values from the control plane, kept encrypted on disk to start on during an outage.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Outage cache")]
pub struct CacheArgs {
    /// Keep the control plane's last values here (encrypted) and start on them when it is down
    #[arg(long, env = "CONND_CACHE_DIR", value_name = "DIR", requires = "cache_key_file")]
    pub cache_dir: Option<PathBuf>,
    /// File of at least 32 random bytes the cache's key is derived from (a Secret, say)
    #[arg(long, env = "CONND_CACHE_KEY_FILE", value_name = "PATH", requires = "cache_dir")]
    pub cache_key_file: Option<PathBuf>,
    /// The oldest cached values connd starts on
    #[arg(long, env = "CONND_MAX_STALE", default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub max_stale: Duration,
}

impl CacheArgs {
    /// The cache's settings; `None` without `--cache-dir`.
    pub fn settings(&self) -> Option<crate::source::cache::Settings> {
        let (dir, key_file) = (self.cache_dir.clone()?, self.cache_key_file.clone()?);
        Some(crate::source::cache::Settings { dir, key_file, max_stale: self.max_stale })
    }
}

impl LogArgs {
    pub fn settings(&self) -> crate::logging::Settings {
        let format = match self.log_format {
            LogFormat::Text => crate::logging::Format::Text,
            LogFormat::Json => crate::logging::Format::Json,
        };
        crate::logging::Settings { format, level: self.log_level }
    }
}

impl OutboundArgs {
    pub fn settings(&self) -> crate::source::outbound::Settings {
        crate::source::outbound::Settings {
            control_plane: self.control_plane.clone(),
            token_file: self.token_file.clone(),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            allow_insecure_http: self.allow_insecure_http,
            startup_timeout: self.startup_timeout,
            no_proxy_env: self.no_proxy_env,
            cache: None,
        }
    }
}

impl ConfigArgs {
    pub fn options(&self) -> crate::resolve::Options {
        crate::resolve::Options {
            project: self.project.clone(),
            component: self.component.clone(),
            env_prefix: self.env_prefix.clone(),
            ignore_unsupported: self.ignore_unsupported,
            control_plane: self.outbound.control_plane.is_some(),
            files_root: self.files_root.clone(),
            strict: self.strict,
        }
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format: text for people, json for CI (values redacted as in text)
    #[arg(long, env = "CONND_CHECK_FORMAT", value_enum, default_value = "text")]
    pub format: crate::output::PlanFormat,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format: dotenv, json, or shell (`eval "$(connd env --format shell)"`)
    #[arg(long, env = "CONND_FORMAT", value_enum, default_value = "dotenv")]
    pub format: EnvFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    Dotenv,
    Json,
    Shell,
}

impl EnvFormat {
    pub fn format(self) -> crate::output::Format {
        match self {
            EnvFormat::Dotenv => crate::output::Format::Dotenv,
            EnvFormat::Json => crate::output::Format::Json,
            EnvFormat::Shell => crate::output::Format::Shell,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The command and its arguments, after `--`
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Supervision")]
pub struct RunArgs {
    /// When the variables change: restart, signal:NAME (e.g. signal:SIGHUP), or none
    #[arg(long, env = "CONND_ON_CHANGE", default_value = "restart", value_parser = parse_on_change, value_name = "ACTION")]
    pub on_change: OnChange,
    /// When only rendered files change: restart, signal:NAME (e.g. signal:SIGHUP), or none
    #[arg(long, env = "CONND_ON_FILE_CHANGE", default_value = "none", value_parser = parse_on_change, value_name = "ACTION")]
    pub on_file_change: OnChange,
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
    /// Forward signals to the workload's whole process group, not only its main process
    #[arg(long, env = "CONND_FORWARD_TO_GROUP")]
    pub forward_to_group: bool,
    /// Also serve the local API on this Unix socket while the workload runs
    #[arg(long, env = "CONND_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// The command and its arguments, after `--`
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD", help_heading = "Arguments")]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub reload: ReloadArgs,
    #[command(flatten)]
    pub access: SocketAccessArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl RunArgs {
    pub fn settings(&self) -> crate::run::supervise::Settings {
        crate::run::supervise::Settings {
            on_change: self.on_change,
            on_file_change: self.on_file_change,
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            timing: crate::run::changes::Timing { debounce: self.change_debounce, splay: self.restart_splay },
            forward_to_group: self.forward_to_group,
        }
    }
}

/// This process's command line, parsed, and the definition it was parsed by: building
/// the definition (every subcommand's flags) is most of clap's part of a start, so it is
/// built once, for the parse and for [`misspelled_env_vars`]. The error is clap's, as
/// `Cli::try_parse` gives it (usage, `--help`, `--version`).
pub fn parse() -> Result<(Cli, clap::Command), clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    let mut matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    match Cli::from_arg_matches_mut(&mut matches) {
        Ok(cli) => Ok((cli, cmd)),
        Err(e) => Err(e.format(&mut cmd)),
    }
}

/// The variables of this process's environment that look like a misspelled `CONND_*`
/// setting (one edit or a case away from one, docs/config.md's typo rule), each with the one
/// meant. Names only: values are never read.
/// `cmd` is the command line's definition, as [`parse`] returns it.
pub fn misspelled_env_vars(cmd: &clap::Command) -> Vec<(String, String)> {
    fn collect(cmd: &clap::Command, known: &mut std::collections::BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|n| n.to_str()) {
                known.insert(name.to_owned());
            }
        }
        cmd.get_subcommands().for_each(|sub| collect(sub, known));
    }
    let candidates: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.to_ascii_uppercase().starts_with("CONND_"))
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let mut known = std::collections::BTreeSet::new();
    collect(cmd, &mut known);
    candidates
        .into_iter()
        .filter(|name| !known.contains(name))
        .filter_map(|name| {
            let upper = name.to_ascii_uppercase();
            let meant = known.iter().find(|k| strsim::osa_distance(&upper, k) <= 1)?;
            Some((name, meant.clone()))
        })
        .collect()
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

/// Parses a file mode in octal, as `0660` or `660`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{text:?} is not an octal file mode such as 0660"))?;
    if mode > 0o777 {
        return Err(format!("{text:?} has bits beyond 0777; give permission bits only"));
    }
    Ok(mode)
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Socket API")]
pub struct ServeArgs {
    /// The Unix socket to serve on; its directory is created
    #[arg(long, env = "CONND_SOCKET", default_value = "/run/connd/connd.sock", value_name = "PATH")]
    pub socket: PathBuf,
    /// How long SIGTERM/SIGINT wait for in-flight requests before closing them
    #[arg(long, env = "CONND_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: std::time::Duration,
    /// Connections open at once; callers beyond get a 503 and a closed connection
    #[arg(long, env = "CONND_MAX_CONNECTIONS", default_value = "4096", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,
    /// Time allowed for a request's headers, and for a kept-alive connection between
    /// requests (a blocking query in flight is not cut)
    #[arg(long, env = "CONND_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_interval, value_name = "DURATION")]
    pub idle_timeout: std::time::Duration,
    #[command(flatten)]
    pub access: SocketAccessArgs,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub reload: ReloadArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The egress proxy of docs/proxy.md (`serve`, `run`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Egress proxy")]
pub struct ProxyArgs {
    /// Serve the egress proxy on this TCP address, e.g. 127.0.0.1:15000: requests to
    /// /CONNECTION/PATH go to the connection's ServiceURL with its credentials
    #[arg(long, env = "CONND_PROXY_LISTEN", value_name = "ADDR")]
    pub proxy_listen: Option<std::net::SocketAddr>,
    /// Serve the egress proxy on this Unix socket (callers allowed as for the API)
    #[arg(long, env = "CONND_PROXY_SOCKET", value_name = "PATH")]
    pub proxy_socket: Option<PathBuf>,
    /// Let --proxy-listen be an address other hosts reach (anyone who can connect
    /// then calls with the connections' credentials)
    #[arg(long, env = "CONND_PROXY_ALLOW_REMOTE")]
    pub proxy_allow_remote: bool,
    /// Time allowed to connect to an upstream, TLS handshake included
    #[arg(long, env = "CONND_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_interval, value_name = "DURATION")]
    pub proxy_connect_timeout: Duration,
    /// Time allowed for an upstream's response head once the request is sent
    #[arg(long, env = "CONND_PROXY_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_interval, value_name = "DURATION")]
    pub proxy_response_timeout: Duration,
}

/// The TCP listener for scrapes and probes (`serve`, `run`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Metrics and probes")]
pub struct MetricsArgs {
    /// Also serve /metrics, /healthz and /readyz (never a value) over TCP on this address,
    /// e.g. 0.0.0.0:9090, for Prometheus scrapes and kubelet httpGet probes
    #[arg(long, env = "CONND_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `HOST:PORT` with an IP host (`127.0.0.1:9090`, `[::1]:9090`); a bare port or a host
/// name is refused with the expected form.
fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        let port = if s.parse::<u16>().is_ok() { s } else { "9090" };
        format!("expected HOST:PORT with an IP address, e.g. `127.0.0.1:{port}` (loopback) or `0.0.0.0:{port}` (all interfaces)")
    })
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The socket of the `connd serve` to ask
    #[arg(long, env = "CONND_SOCKET", default_value = "/run/connd/connd.sock", value_name = "PATH")]
    pub socket: PathBuf,
    /// How long to wait for the answer
    #[arg(long, env = "CONND_PROBE_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

/// How a long-running mode notices changes (`serve`, `run`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Reloading")]
pub struct ReloadArgs {
    /// How often the control plane is re-checked (jittered)
    #[arg(long, env = "CONND_REFRESH_INTERVAL", default_value = "60s", value_parser = parse_interval, value_name = "DURATION")]
    pub refresh_interval: Duration,
    /// How often the directory is re-read even without a change event (a backstop)
    #[arg(long, env = "CONND_RESCAN_INTERVAL", default_value = "30s", value_parser = parse_interval, value_name = "DURATION")]
    pub rescan_interval: Duration,
}

/// Who may use the local API's socket (`serve`, and `run --socket`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Socket API")]
pub struct SocketAccessArgs {
    /// Permission bits of the socket, in octal
    #[arg(long, env = "CONND_SOCKET_MODE", default_value = "0660", value_parser = parse_mode, value_name = "MODE")]
    pub socket_mode: u32,
    /// The socket's group (a gid or a group name); callers in it still need --allow-gid or --allow-uid
    #[arg(long, env = "CONND_SOCKET_GROUP", value_parser = parse_gid, value_name = "GROUP")]
    pub socket_group: Option<u32>,
    /// A user allowed to call the API, besides connd's own: a uid or a user name
    /// (repeatable, or a comma list)
    #[arg(long, env = "CONND_ALLOW_UID", value_delimiter = ',', value_parser = parse_uid, value_name = "USER")]
    pub allow_uid: Vec<u32>,
    /// A group whose processes may call the API: a gid or a group name (repeatable, or a
    /// comma list)
    #[arg(long, env = "CONND_ALLOW_GID", value_delimiter = ',', value_parser = parse_gid, value_name = "GROUP")]
    pub allow_gid: Vec<u32>,
}

/// A uid, or a user name looked up in the system's user database (`/etc/passwd`, NSS).
pub fn parse_uid(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user named {text:?} on this system: give a uid, or the name of an existing user")),
        Err(e) => Err(format!("cannot look up the user {text:?}: {e}")),
    }
}

/// A gid, or a group name looked up in the system's group database (`/etc/group`, NSS).
pub fn parse_gid(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => {
            Err(format!("no group named {text:?} on this system: give a gid, or the name of an existing group"))
        }
        Err(e) => Err(format!("cannot look up the group {text:?}: {e}")),
    }
}

/// `connd inject` (docs/kubernetes.md).
#[derive(Debug, Args)]
#[command(next_help_heading = "Kubernetes injection")]
pub struct InjectArgs {
    /// The manifests to read (YAML, one or many documents); `-` for stdin
    #[arg(
        short = 'f',
        long = "filename",
        visible_alias = "file",
        env = "CONND_INJECT_FILE",
        default_value = "-",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    #[command(flatten)]
    pub image: ImageArgs,
}

/// The image of the containers `inject` and `webhook` add.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// The connd image the added containers run
    #[arg(long, env = "CONND_IMAGE", default_value = crate::inject::DEFAULT_IMAGE, value_name = "IMAGE", value_parser = image_reference)]
    pub image: String,
}

/// An image reference as a container's `image` takes it: not empty, no whitespace or
/// control characters (which would write a broken or different manifest).
fn image_reference(text: &str) -> Result<String, String> {
    match text {
        "" => Err("an image reference is needed, such as registry.example/connd:0.1.0".into()),
        t if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err("an image reference has no spaces, line breaks or control characters".into())
        }
        t => Ok(t.to_owned()),
    }
}

/// `connd webhook` (docs/kubernetes.md).
#[derive(Debug, Args)]
#[command(next_help_heading = "Admission webhook")]
pub struct WebhookArgs {
    /// The HTTPS address to listen on
    #[arg(long, env = "CONND_LISTEN", default_value = "0.0.0.0:8443", value_parser = parse_listen_addr, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// PEM certificate (chain) served; re-read when the file changes
    #[arg(long, env = "CONND_TLS_CERT", value_name = "PATH")]
    pub tls_cert: PathBuf,
    /// PEM private key of --tls-cert; re-read when the file changes
    #[arg(long, env = "CONND_TLS_KEY", value_name = "PATH")]
    pub tls_key: PathBuf,
    /// How long SIGTERM/SIGINT wait for reviews in flight before closing them
    #[arg(long, env = "CONND_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// After SIGTERM/SIGINT, keep answering this long (with /readyz 503) while the
    /// Service's endpoints drop this replica, before draining
    #[arg(long, env = "CONND_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_delay: Duration,
    /// Connections open at once; more wait to be accepted
    #[arg(long, env = "CONND_MAX_CONNECTIONS", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,
    #[command(flatten)]
    pub image: ImageArgs,
}

impl WebhookArgs {
    pub fn settings(&self) -> crate::inject::webhook::WebhookSettings {
        crate::inject::webhook::WebhookSettings {
            listen: self.listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            inject: self.image.settings(),
            limits: crate::listen::conn::Limits {
                header_read_timeout: Duration::from_secs(10),
                max_connections: self.max_connections as usize,
            },
            grace: self.shutdown_grace,
            shutdown_delay: self.shutdown_delay,
        }
    }
}

impl ImageArgs {
    pub fn settings(&self) -> crate::inject::Settings {
        crate::inject::Settings { image: self.image.clone() }
    }
}

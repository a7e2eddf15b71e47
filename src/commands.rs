//! The subcommands, as library functions the binary calls, and the one place where flags
//! become each layer's settings. Each returns the exit code for success; a failure is an
//! error chain whose first classified cause gives the exit code ([`exit_code`]).

use crate::cli::{
    CacheArgs, CheckArgs, ConfigArgs, EnvArgs, ExecArgs, OutboundArgs, ProbeArgs, ProxyArgs, RenderArgs, RunArgs,
    ServeArgs, SocketAccessArgs,
};
use crate::config::ConfigError;
use crate::error::{Class, Classify};
use crate::exec::ExecError;
use crate::listen::auth::Allow;
use crate::reload::{ReloadConfig, StartupError};
use crate::resolve::{self, Plan};
use crate::run::supervise::SuperviseError;
use crate::serve::api::server::{self, BindError};
use crate::serve::probe::ProbeError;
use crate::serve::{ServeSettings, Socket};
use crate::source::values::{self, ValueError, Values};
use crate::source::FetchError;
use crate::source::{credentials, once};
use crate::{exec, exit, output, stdout};
use std::error::Error;
use std::io::Write;
use std::sync::Arc;

/// Loads the directory, builds the plan and resolves every value once, on the outage
/// cache (docs/cache.md) if `cache` says so and the control plane is down.
pub fn resolve_once(config: &ConfigArgs, cache: &CacheArgs) -> anyhow::Result<(Arc<Plan>, Values)> {
    let outbound = outbound(config, cache);
    // A bad key file is an error even where this directory needs no fetch: it would be
    // one on the day the directory gains a remote parameter.
    if let Some(settings) = &outbound.cache {
        let mut key = crate::source::cache::read_key(settings).map_err(crate::source::SetupError::CacheKey)?;
        zeroize::Zeroize::zeroize(&mut key);
    }
    // Directories that need no outbound source stay on this thread: no runtime, no TLS setup.
    once::resolve_blocking(&config.config_dir, &config.options(), |plan| {
        crate::source::outbound::fetch_once(&outbound, plan)
    })
}

/// `check` reads every local source and contacts nothing: control-plane parameters are
/// shown as `remote` whether or not a control plane is given (docs/commands.md). Meant as
/// the process's last work: on success the plan is left to the exit to free.
pub fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let options = resolve::Options { control_plane: true, ..args.config.options() };
    let mut plan = resolve::plan(&args.config.config_dir, &options)?;
    let files = values::check_local(&plan)?;
    // Values a dotenv reader would mangle, known here for the local ones; read in place,
    // not copied out of the plan.
    let mut hazards = crate::config::Diagnostics::default();
    for (i, _) in values::local_vars(&plan, &files).filter(|(_, v)| crate::dotenv::python_dotenv_loses(v)) {
        let b = &plan.vars[i];
        let (message, fix) = crate::dotenv::python_dotenv_warning(&format!("the value of {}", b.var));
        hazards.warn(b.origin.clone(), message, fix);
    }
    if options.strict && !hazards.warnings().is_empty() {
        hazards.warnings_as_errors();
        return Err(crate::config::ConfigError { dir: plan.dir.clone(), diagnostics: hazards }.into());
    }
    plan.warnings.extend(hazards.warnings().iter().cloned());
    plan.log_warnings();
    // The token URLs and keys `env` would refuse, where the client's parameters are all
    // local (resolving without a fetch leaves the others out).
    for p in plan.connections.iter().filter(|p| p.connection.is_oauth()) {
        credentials::check_local(p, args.config.outbound.allow_insecure_http)?;
    }
    // What the kernel would refuse, as far as it is known here: control-plane values are not.
    let local = values::local_vars(&plan, &files).map(|(i, v)| (plan.vars[i].var.as_bytes(), v.as_bytes()));
    exec::check_limits(local, std::iter::empty())?;
    drop(files);
    match args.format {
        output::PlanFormat::Text => stdout::write_with(|out| {
            output::write_plan(out, &plan)?;
            out.write_all(crate::files::describe(&plan).as_bytes())
        })?,
        output::PlanFormat::Json => {
            let files = (!plan.files.is_empty()).then(|| crate::files::describe_json(&plan));
            stdout::write_with(|out| output::write_plan_json(out, &plan, files))?
        }
    }
    // The output is flushed and the process ends on return: freeing the plan piece by
    // piece (on 10,000 connections, 8% of `check`'s time) would only delay the exit.
    std::mem::forget(plan);
    Ok(0)
}

pub fn env(args: &EnvArgs) -> anyhow::Result<u8> {
    let (_, values) = resolve_once(&args.config, &args.cache)?;
    stdout::write(output::render_env(&values.env, args.format.format()).as_bytes())?;
    Ok(0)
}

/// Resolves once and writes the files (docs/files.md), then exits: for init containers and
/// `ExecStartPre`. Nothing is written when any file fails to render.
pub fn render(args: &RenderArgs) -> anyhow::Result<u8> {
    let (plan, values) = resolve_once(&args.config, &args.cache)?;
    let hazards = crate::files::dotenv_hazards(&plan, &values);
    if args.config.strict && !hazards.is_empty() {
        let mut diagnostics = crate::config::Diagnostics::default();
        hazards.into_iter().for_each(|(origin, message, fix)| diagnostics.warn(origin, message, fix));
        diagnostics.warnings_as_errors();
        return Err(crate::config::ConfigError { dir: plan.dir.clone(), diagnostics }.into());
    }
    for (origin, message, fix) in hazards {
        tracing::warn!("{origin}: {message}\n    fix: {fix}");
    }
    let changed = crate::files::write_all(&plan, &values)?;
    tracing::info!(files = plan.files.len(), changed, "files rendered");
    Ok(0)
}

/// Resolves, writes the files, then execs; returns only on failure. No workload starts
/// with a file missing or partly rendered.
pub fn exec(args: &ExecArgs) -> anyhow::Result<u8> {
    let (plan, values) = resolve_once(&args.config, &args.cache)?;
    if !plan.files.is_empty() {
        crate::files::write_all(&plan, &values)?;
    }
    let env = exec::child_env(std::env::vars_os(), &values.env);
    Err(exec::exec(&args.command, env).into())
}

/// Supervises the command with values kept current; returns its exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let settings = crate::run::Settings {
        command: args.command.clone(),
        supervise: args.settings(),
        reload: ReloadConfig { file_settle: args.change_debounce, ..reload_config(&args.config, &args.reload) },
        outbound: outbound(&args.config, &args.cache),
        api: args.socket.as_ref().map(|path| (socket(path, &args.access), allow(&args.access))),
        proxy: proxy(&args.proxy, &args.access, &args.config.outbound, server::Limits::default(), RUN_API_GRACE),
        metrics_listener: args.metrics.metrics_listen.map(crate::serve::metrics_listen::bind).transpose()?,
    };
    crate::run::command(&settings)
}

/// Serves the values on a socket until SIGTERM or SIGINT.
pub fn serve(args: &ServeArgs) -> anyhow::Result<u8> {
    let settings = ServeSettings {
        reload: reload_config(&args.config, &args.reload),
        allow: allow(&args.access),
        startup_timeout: args.config.outbound.startup_timeout,
        grace: args.shutdown_grace,
        notify_socket: std::env::var("NOTIFY_SOCKET").ok(),
        sighup: true,
        limits: server::Limits {
            header_read_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
        },
        metrics_listener: args.metrics.metrics_listen.map(crate::serve::metrics_listen::bind).transpose()?,
    };
    let proxy = proxy(&args.proxy, &args.access, &args.config.outbound, settings.limits, args.shutdown_grace);
    crate::serve::command(settings, &socket(&args.socket, &args.access), &outbound(&args.config, &args.cache), &proxy)?;
    Ok(exit::OK)
}

/// Prints the manifests with connd added (docs/kubernetes.md); nothing when any is refused.
pub fn inject(args: &crate::cli::InjectArgs) -> anyhow::Result<u8> {
    let (text, name) = crate::inject::manifest::read_input(&args.file)?;
    let out = crate::inject::manifest::inject_stream(&text, &name, &args.image.settings())?;
    stdout::write(out.as_bytes())?;
    Ok(exit::OK)
}

/// Serves the admission webhook until SIGTERM or SIGINT.
pub fn webhook(args: &crate::cli::WebhookArgs) -> anyhow::Result<u8> {
    crate::inject::webhook::command(&args.settings())?;
    Ok(exit::OK)
}

/// Exits 0 when the server on the socket is ready.
pub fn probe(args: &ProbeArgs) -> anyhow::Result<u8> {
    crate::serve::probe::command(&args.socket, args.timeout)?;
    Ok(exit::OK)
}

/// The outbound sources' settings, the outage cache's included.
fn outbound(config: &ConfigArgs, cache: &CacheArgs) -> crate::source::outbound::Settings {
    crate::source::outbound::Settings { cache: cache.settings(), ..config.outbound.settings() }
}

fn reload_config(config: &ConfigArgs, reload: &crate::cli::ReloadArgs) -> ReloadConfig {
    ReloadConfig::new(config.config_dir.clone(), config.options(), reload.refresh_interval, reload.rescan_interval)
}

fn socket(path: &std::path::Path, access: &SocketAccessArgs) -> Socket {
    Socket { path: path.to_path_buf(), mode: access.socket_mode, group: access.socket_group }
}

/// How long the proxy's requests in flight get once `run`'s workload has exited.
const RUN_API_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The egress proxy's settings: its own flags, the API's socket access and limits, and
/// the TLS, outbound-proxy and plain-http rules of every outbound call.
fn proxy(
    args: &ProxyArgs,
    access: &SocketAccessArgs,
    outbound: &OutboundArgs,
    limits: server::Limits,
    grace: std::time::Duration,
) -> crate::proxy::ProxySettings {
    crate::proxy::ProxySettings {
        listen: args.proxy_listen,
        allow_remote: args.proxy_allow_remote,
        socket: args.proxy_socket.clone(),
        socket_mode: access.socket_mode,
        socket_group: access.socket_group,
        allow: allow(access),
        tls: crate::http::tls::TlsSettings {
            ca_file: outbound.ca_file.clone(),
            client_cert: outbound.client_cert.clone(),
            client_key: outbound.client_key.clone(),
        },
        no_proxy_env: outbound.no_proxy_env,
        connect_timeout: args.proxy_connect_timeout,
        forwarding: crate::proxy::Forwarding {
            allow_insecure_http: outbound.allow_insecure_http,
            response_timeout: args.proxy_response_timeout,
        },
        limits,
        grace,
    }
}

fn allow(access: &SocketAccessArgs) -> Allow {
    Allow::new(access.allow_uid.clone(), access.allow_gid.clone())
}

/// The exit code for a failure (docs/commands.md): the class of the first cause in the chain
/// that has one; 1 when none has.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain().find_map(class_of).map_or(exit::FAILURE, Class::exit_code)
}

/// The class of one cause, if it is one of connd's errors.
fn class_of(cause: &(dyn Error + 'static)) -> Option<Class> {
    fn as_class<E: Error + Classify + 'static>(cause: &(dyn Error + 'static)) -> Option<Class> {
        cause.downcast_ref::<E>().map(Classify::class)
    }
    as_class::<ConfigError>(cause)
        .or_else(|| as_class::<ValueError>(cause))
        .or_else(|| as_class::<FetchError>(cause))
        .or_else(|| as_class::<crate::source::controlplane::ControlPlaneError>(cause))
        .or_else(|| as_class::<crate::source::oauth::OAuthError>(cause))
        .or_else(|| as_class::<crate::source::SetupError>(cause))
        .or_else(|| as_class::<crate::source::cache::KeyError>(cause))
        .or_else(|| as_class::<ProbeError>(cause))
        .or_else(|| as_class::<crate::proxy::ListenError>(cause))
        .or_else(|| as_class::<BindError>(cause))
        .or_else(|| as_class::<crate::listen::ListenError>(cause))
        .or_else(|| as_class::<StartupError>(cause))
        .or_else(|| as_class::<ExecError>(cause))
        .or_else(|| as_class::<SuperviseError>(cause))
        .or_else(|| as_class::<crate::files::FileError>(cause))
        .or_else(|| as_class::<crate::inject::manifest::ManifestError>(cause))
        .or_else(|| as_class::<crate::inject::InjectError>(cause))
        .or_else(|| as_class::<crate::inject::webhook::certs::CertError>(cause))
}

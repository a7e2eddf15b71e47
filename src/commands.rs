//! The subcommands, as library functions the binary calls. Each returns the exit code
//! for success; failures are typed errors that `exit_code` maps.

use crate::cli::{CheckArgs, ConfigArgs, EnvArgs, ExecArgs, RunArgs};
use crate::resolve::{self, Plan};
use crate::source::values::{self, Fetched, Values};
use crate::{exec, output};
use std::io::Write;

/// Loads the directory, builds the plan and resolves every value once.
pub fn resolve_once(config: &ConfigArgs) -> anyhow::Result<(Plan, Values)> {
    let plan = resolve::plan(&config.config_dir, &config.options())?;
    log_warnings(&plan);
    // Directories that need nothing remote stay on this thread: no runtime, no TLS setup.
    let fetched = if plan.needs_remote() || plan.token_vars().next().is_some() {
        crate::source::remote::fetch_once(&config.remote, &plan)?
    } else {
        Fetched::default()
    };
    let values = values::materialize(&plan, &fetched)?;
    tracing::debug!(connections = plan.connections.len(), variables = values.env.len(), "resolved");
    Ok((plan, values))
}

/// `check` reads every local source and contacts nothing: remote parameters are shown
/// as `remote` whether or not a control plane is given (SPEC §3).
pub fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let options = resolve::Options { control_plane: true, ..args.config.options() };
    let plan = resolve::plan(&args.config.config_dir, &options)?;
    log_warnings(&plan);
    values::check_local(&plan)?;
    let text = match args.format {
        output::PlanFormat::Text => output::render_plan(&plan),
        output::PlanFormat::Json => output::render_plan_json(&plan),
    };
    write_stdout(&text)?;
    Ok(0)
}

/// The plan's warnings (likely typos), one log record each.
pub fn log_warnings(plan: &Plan) {
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
}

pub fn env(args: &EnvArgs) -> anyhow::Result<u8> {
    let (_, values) = resolve_once(&args.config)?;
    write_stdout(&output::render_env(&values.env, args.format))?;
    Ok(0)
}

/// Resolves, then execs; returns only on failure.
pub fn exec(args: &ExecArgs) -> anyhow::Result<u8> {
    let (_, values) = resolve_once(&args.config)?;
    let env = exec::child_env(std::env::vars_os(), &values.env);
    Err(exec::exec(&args.command, env).into())
}

/// Supervises the command with values kept current; returns its exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    crate::run::command(args)
}

fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

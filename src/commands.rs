//! The subcommands, as library functions the binary calls. Each returns the exit code
//! for success; failures are typed errors that `exit_code` maps.

use crate::cli::{CheckArgs, ConfigArgs, EnvArgs, ExecArgs, RunArgs};
use crate::resolve::{self, Plan};
use crate::values::{self, Fetched, Values};
use crate::{exec, output, supervise};
use std::io::Write;

/// Loads the directory, builds the plan and resolves every value once.
pub fn resolve_once(config: &ConfigArgs) -> anyhow::Result<(Plan, Values)> {
    let plan = resolve::plan(&config.config_dir, &config.options())?;
    let values = values::materialize(&plan, &Fetched::default())?;
    tracing::debug!(connections = plan.connections.len(), variables = values.env.len(), "resolved");
    Ok((plan, values))
}

pub fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let plan = resolve::plan(&args.config.config_dir, &args.config.options())?;
    values::check_local(&plan)?;
    write_stdout(&output::render_plan(&plan))?;
    Ok(0)
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

/// Resolves, then supervises the command until it exits for good; returns its exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let (_, values) = resolve_once(&args.config)?;
    // A current-thread runtime: the supervisor relies on spawning and reaping never
    // running at the same time.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (_publisher, rx) = tokio::sync::watch::channel(std::sync::Arc::new(values.env));
    let code =
        runtime.block_on(supervise::supervise(&args.command, std::env::vars_os().collect(), rx, &args.settings()))?;
    Ok(code)
}

fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

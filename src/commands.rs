//! The subcommands, as library functions the binary calls. Each returns the exit code
//! for success; failures are typed errors that `exit_code` maps.

use crate::cli::{CheckArgs, ConfigArgs, EnvArgs, ExecArgs, RenderArgs, RunArgs};
use crate::resolve::{self, Plan};
use crate::source::values::{self, Fetched, Values};
use crate::{exec, output};
use std::io::Write;

/// Loads the directory, builds the plan and resolves every value once.
pub fn resolve_once(config: &ConfigArgs) -> anyhow::Result<(Plan, Values)> {
    let plan = resolve::plan(&config.config_dir, &config.options())?;
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

pub fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let plan = resolve::plan(&args.config.config_dir, &args.config.options())?;
    values::check_local(&plan)?;
    let mut text = output::render_plan(&plan);
    text.push_str(&crate::files::describe(&plan));
    write_stdout(&text)?;
    Ok(0)
}

pub fn env(args: &EnvArgs) -> anyhow::Result<u8> {
    let (_, values) = resolve_once(&args.config)?;
    write_stdout(&output::render_env(&values.env, args.format))?;
    Ok(0)
}

/// Resolves once and writes the files (SPEC §7), then exits: for init containers and
/// `ExecStartPre`. Nothing is written when any file fails to render.
pub fn render(args: &RenderArgs) -> anyhow::Result<u8> {
    let (plan, values) = resolve_once(&args.config)?;
    let changed = crate::files::write_all(&plan, &values)?;
    tracing::info!(files = plan.files.len(), changed, "files rendered");
    Ok(0)
}

/// Resolves, writes the files, then execs; returns only on failure. No workload starts
/// with a file missing or partly rendered.
pub fn exec(args: &ExecArgs) -> anyhow::Result<u8> {
    let (plan, values) = resolve_once(&args.config)?;
    if !plan.files.is_empty() {
        crate::files::write_all(&plan, &values)?;
    }
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

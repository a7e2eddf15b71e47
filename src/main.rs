//! The binary: parse the command line, start logging, run the command, map its result
//! to an exit code. The work is in the library.

use connd::cli::{Command, LogFormat};
use connd::{commands, exit, logging, stdout};
use std::process::ExitCode;

/// The static musl build (the one the image ships, for any base image) gets mimalloc:
/// loading a directory is allocation-bound (the YAML parser allocates per event and
/// scalar), and musl's allocator made `exec` on 50 connections 6.9 ms against 2.5 ms with
/// mimalloc. `no_thp` keeps transparent huge pages out of its arenas, which otherwise
/// tripled serve's idle RSS. On glibc the system allocator measured better on both.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reserves its first arena at the first allocation, 1 GiB by default, and
/// writes the arena's bitmaps (one per size class, 2 KiB each for 1 GiB) at its start:
/// about 40 pages first touched by every start, 0.1 ms of `exec` on a VM where a fault
/// costs 2.2 µs. An arena of 64 MiB needs 4; a process that outgrows it reserves
/// another (mimalloc doubles their size every eight), and an allocation larger than an
/// arena goes to the OS as before. `MIMALLOC_ARENA_RESERVE`, when set, still decides.
#[cfg(target_env = "musl")]
#[allow(unsafe_code)]
fn small_first_arena() {
    /// `mi_option_arena_reserve` in mimalloc 3's `mimalloc.h`, in KiB; libmimalloc-sys
    /// names only the options mimalloc 2 shares.
    const ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;
    if std::env::var_os("MIMALLOC_ARENA_RESERVE").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` only sets a value mimalloc reads when it next reserves an
    // arena; called first thing in `main`, before any allocation and any other thread.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_RESERVE, 64 * 1024);
    }
}

/// glibc's malloc gives each thread that allocates an arena of its own (up to eight per
/// core), and an arena keeps pages it once used. Under `benches/soak.rs` the runtime's
/// workers and blocking threads spread `serve`'s allocations over several arenas whose
/// RSS still crept after ten minutes (+436 KiB from minute 2 to 10); with one arena the
/// heap stopped growing after five (+176 KiB, then flat), at no cost per proxied
/// request measurable in `benches/proxy.rs`: glibc's per-thread cache serves most
/// allocations without the arena's lock, and connd's threads rarely allocate at once.
/// Only the long-running commands get it: `check` parses a large directory on two
/// threads at once, which one arena slowed by about a tenth (10,000 connections).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    // SAFETY: `mallopt` only sets a parameter of the allocator; called from `main` right
    // after the command line is read, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    small_first_arena();
    let (cli, definition) = match connd::cli::parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if matches!(cli.command, Command::Serve(_) | Command::Run(_) | Command::Webhook(_)) {
        one_malloc_arena();
    }
    logging::init(&cli.log.settings());
    for (name, meant) in connd::cli::misspelled_env_vars(&definition) {
        tracing::warn!("{name} is not a variable connd reads, and is ignored: did you mean {meant}?");
    }
    drop(definition);
    if matches!(cli.command, Command::Serve(_) | Command::Run(_)) {
        connd::secret::forbid_dumps();
    }
    let result = match &cli.command {
        Command::Check(args) => commands::check(args),
        Command::Env(args) => commands::env(args),
        Command::Exec(args) => commands::exec(args),
        Command::Render(args) => commands::render(args),
        Command::Completions { shell } => {
            stdout::write(&connd::docs::completions(*shell)).map(|()| 0).map_err(Into::into)
        }
        Command::Man { out_dir: Some(dir) } => connd::docs::man_pages(dir).map(|()| 0).map_err(Into::into),
        Command::Man { out_dir: None } => stdout::write(&connd::docs::man_page()).map(|()| 0).map_err(Into::into),
        Command::Serve(args) => commands::serve(args),
        Command::Probe(args) => commands::probe(args),
        Command::Run(args) => commands::run(args),
        Command::Inject(args) => commands::inject(args),
        Command::Webhook(args) => commands::webhook(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of the output chose to stop reading: nothing to report (as ripgrep).
        Err(e) if stdout::reader_gone(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = commands::exit_code(&e);
            // Neither way panics when stderr fails: the message is then dropped.
            match cli.log.log_format {
                LogFormat::Json => {
                    tracing::error!(
                        exit_code = code,
                        problems = logging::problems(&e).as_deref(),
                        "{}",
                        connd::error::chain(e.as_ref())
                    )
                }
                LogFormat::Text => logging::write_stderr(&format!("connd: {}\n", connd::error::chain(e.as_ref()))),
            }
            ExitCode::from(code)
        }
    }
}

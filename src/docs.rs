//! Shell completions and man pages, generated from the command-line definitions in
//! `cli`, so they can never disagree with `--help`.

use crate::cli::Cli;
use clap::CommandFactory;
use std::path::Path;

/// The completion script for `shell`. Generated into memory: the generators panic on a
/// failed write, and stdout may be a pipe whose reader has gone.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "connd", &mut out);
    out
}

/// `connd.1`, as roff.
pub fn man_page() -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(Cli::command()).render(&mut out);
    out
}

/// `connd.1` and one `connd-<command>.1` per subcommand, into `dir`.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(&mut std::fs::File::create(dir.join("connd.1"))?)?;
    for sub in cmd.get_subcommands() {
        let name = format!("connd-{}", sub.get_name());
        let page = sub.clone().display_name(name.clone()).bin_name(name.clone());
        clap_mangen::Man::new(page).render(&mut std::fs::File::create(dir.join(format!("{name}.1")))?)?;
    }
    Ok(())
}

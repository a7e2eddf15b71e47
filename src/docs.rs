//! Shell completions and man pages, generated from the command-line definitions in
//! `cli`, so they can never disagree with `--help`.

use crate::cli::Cli;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "connd", out);
}

/// `connd.1` on `out`.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
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

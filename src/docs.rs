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
    out.extend_from_slice(TRAILER.as_bytes());
    out
}

/// What every page ends with, beyond the flags: the exit codes (docs/commands.md) and
/// where the rest of the reference is.
const TRAILER: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
ok
.TP
\fB64\fR
usage: an unknown flag, a bad value, no command after \fB\-\-\fR
.TP
\fB69\fR
the control plane or a token endpoint unavailable past \fB\-\-startup\-timeout\fR
.TP
\fB73\fR
the socket, a listener or a rendered file cannot be created
.TP
\fB77\fR
refused by the control plane (401/403) or by the token endpoint (invalid client)
.TP
\fB78\fR
the connection\-config directory (or a setting from the flags) is wrong
.TP
\fB126\fR, \fB127\fR
the workload's command cannot be run, or is not found
.TP
\fB128+N\fR
(\fBrun\fR) the workload died of signal N; otherwise \fBrun\fR exits with the workload's code
.SH "SEE ALSO"
The connection\-config directory: docs/config.md in connd's source (component.yaml,
connection descriptors, \fBkind: File\fR). Commands, flags and exit codes: docs/commands.md;
the local API: docs/api.md; rendered files: docs/files.md; the egress proxy: docs/proxy.md.
"#;

/// `connd.1` and one `connd-<command>.1` per subcommand, into `dir`. A command's page is
/// named `connd-exec` but its synopsis reads `connd exec`, as it is typed.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    std::fs::write(dir.join("connd.1"), man_page())?;
    for sub in cmd.get_subcommands() {
        let name = format!("connd-{}", sub.get_name());
        let page = sub.clone().display_name(name.clone()).bin_name(format!("connd {}", sub.get_name()));
        let mut file = std::fs::File::create(dir.join(format!("{name}.1")))?;
        clap_mangen::Man::new(page).render(&mut file)?;
        file.write_all(TRAILER.as_bytes())?;
    }
    Ok(())
}

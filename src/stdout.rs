//! connd's standard output, for the commands that print (`check`, `env`, `man`,
//! `completions`). A reader that goes away early (`connd man | head -1`) ends the
//! command quietly, as it ends `cat`; any other failure (a full disk) is an error that
//! names the output. Nothing here panics, whatever the descriptor is.

use std::io::{BufWriter, StdoutLock, Write};

#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    /// EPIPE: the reader closed its end. Not worth a message: the reader chose to stop.
    #[error("the reader of the output went away")]
    Closed,
    #[error("cannot write the output: {0}")]
    Failed(#[source] std::io::Error),
}

/// Writes all of `bytes` to stdout and flushes it.
pub fn write(bytes: &[u8]) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(classify)
}

/// How much output [`write_with`] gathers before it writes: a few system calls for a large
/// `check`, and little memory.
const BUFFER: usize = 64 * 1024;

/// Runs `write` on stdout behind a buffer, then flushes it: for output made in pieces
/// (`check` on thousands of connections), which is then never held whole in memory.
pub fn write_with(
    write: impl FnOnce(&mut BufWriter<StdoutLock<'static>>) -> std::io::Result<()>,
) -> Result<(), StdoutError> {
    let mut out = BufWriter::with_capacity(BUFFER, std::io::stdout().lock());
    write(&mut out).and_then(|()| out.flush()).map_err(classify)
}

fn classify(e: std::io::Error) -> StdoutError {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => StdoutError::Closed,
        _ => StdoutError::Failed(e),
    }
}

/// Whether `err` is only that the reader of stdout went away.
pub fn reader_gone(err: &anyhow::Error) -> bool {
    err.chain().any(|c| matches!(c.downcast_ref::<StdoutError>(), Some(StdoutError::Closed)))
}

//! Tracing to stderr, as text or JSON lines. Values are never passed to the logger;
//! secrets are `Secret`s, whose formatting redacts.

use crate::cli::{LogArgs, LogFormat};

pub fn init(args: &LogArgs) {
    let builder =
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(args.log_level).with_target(false);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

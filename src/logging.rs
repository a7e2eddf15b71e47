//! Tracing to stderr, as text or JSON lines. Values are never passed to the logger;
//! secrets are `Secret`s, whose formatting redacts. Boundary: set up once by the binary
//! from [`Settings`]; every other module only emits events.

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// One JSON object per line, the event's fields flattened into it.
    Json,
}

/// What the logger needs from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub format: Format,
    /// The least severe level written.
    pub level: tracing::level_filters::LevelFilter,
}

pub fn init(settings: &Settings) {
    let builder =
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(settings.level).with_target(false);
    match settings.format {
        Format::Json => builder.json().flatten_event(true).init(),
        Format::Text => builder.init(),
    }
}

//! Tracing to stderr, as text or JSON lines (docs/commands.md "Logs"). Values are never passed to
//! the logger; secrets are `Secret`s, whose formatting redacts.
//!
//! A log write never stops connd: when stderr fails (its reader gone, a full disk, a
//! closed descriptor) the record is dropped and counted (`write_failures`, shown on
//! `/metrics` as `connd_log_write_failures_total`), and the command carries on.
//!
//! Every record is one unit a log pipeline can keep together: in text, the lines after a
//! record's first are indented (`kubectl logs` and journald show them under it); in
//! JSON, one object per line, with an error's config problems as an array of
//! `{file, line, message, fix}` under `problems` (see [`problems`]).
//!
//! Boundary: set up once by the binary from [`Settings`]; every other module only emits
//! events.

use crate::config::ConfigError;
use parking_lot::Mutex;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Records (log lines, and the final error) that could not be written to stderr.
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Whole records go out one at a time, so that two threads' records never interleave.
static STDERR: Mutex<()> = Mutex::new(());

/// The field name whose value [`problems`] gives: JSON logs carry it as an array.
pub const PROBLEMS: &str = "problems";

/// How many log records were dropped because stderr could not take them.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Relaxed)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One record per line, continuation lines indented.
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

/// Installs the global logger. Text carries colour only when stderr is a terminal and
/// `NO_COLOR` is unset or empty (no-color.org).
///
/// `--log-level debug` and `trace` are connd's own records: the libraries under it (the
/// HTTP/2 codec writes a record per frame) are written from `info` up, so that a
/// proxied request's one record is not lost among its frames.
pub fn init(settings: &Settings) {
    let format = settings.format;
    let builder = tracing_subscriber::fmt()
        .with_writer(move || RecordWriter { format })
        .with_max_level(settings.level)
        .log_internal_errors(false);
    let libraries = settings.level.min(tracing::level_filters::LevelFilter::INFO);
    let targets = Targets::new().with_default(libraries).with_target("connd", settings.level);
    match settings.format {
        Format::Json => builder.event_format(JsonLines).finish().with(SpanFields).with(targets).init(),
        Format::Text => {
            let colour =
                std::io::stderr().is_terminal() && !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty());
            builder.with_target(false).with_ansi(colour).fmt_fields(TextFields).finish().with(targets).init()
        }
    }
}

/// The text log's fields: `message`, then ` name=value` for each other field, one space
/// between fields and none before the first (a span's prefix reads `reload{kind=Local}`).
/// [`PROBLEMS`] is left out: the message already lists the problems, one per line.
struct TextFields;

impl<'w> tracing_subscriber::field::MakeVisitor<Writer<'w>> for TextFields {
    type Visitor = TextVisitor<'w>;

    fn make_visitor(&self, w: Writer<'w>) -> TextVisitor<'w> {
        TextVisitor { w, first: true, result: Ok(()) }
    }
}

struct TextVisitor<'w> {
    w: Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || field.name() == PROBLEMS {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.w, "{sep}{value:?}"),
            name => write!(self.w, "{sep}{name}={value:?}"),
        };
    }
}

impl tracing_subscriber::field::VisitOutput<std::fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> std::fmt::Result {
        self.result
    }
}

impl tracing_subscriber::field::VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn std::fmt::Write {
        &mut self.w
    }
}

/// Writes `text` to stderr as one record: lines after the first indented, as the text
/// log does. A failure is counted and otherwise ignored; for the final error of a
/// command, which has nowhere else to go.
pub fn write_stderr(text: &str) {
    let _ = RecordWriter { format: Format::Text }.write_all(text.as_bytes());
}

/// The config problems in `err`'s chain, as a value for the [`PROBLEMS`] field: JSON
/// logs show it as an array of `{file, line, message, fix}` (`line` and `fix` null where
/// unknown), text logs leave it out. `None` when the chain holds no config error.
pub fn problems(err: &anyhow::Error) -> Option<String> {
    let config = err.chain().find_map(|c| c.downcast_ref::<ConfigError>())?;
    let list: Vec<serde_json::Value> = config
        .diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "file": d.origin.file.display().to_string(),
                "line": d.origin.line,
                "message": d.message,
                "fix": d.fix,
            })
        })
        .collect();
    Some(serde_json::Value::Array(list).to_string())
}

/// The subscriber's writer: each `write_all` is one formatted record.
struct RecordWriter {
    /// Text records get their continuation lines indented.
    format: Format,
}

impl Write for RecordWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let record = match self.format {
            Format::Text => indent_continuations(buf),
            Format::Json => buf.to_vec(),
        };
        let _one_at_a_time = STDERR.lock();
        if write_fd2(&record).is_err() {
            WRITE_FAILURES.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes to file descriptor 2 directly: std's `stderr()` reports a closed descriptor
/// as success, and a dropped record must be counted.
fn write_fd2(mut buf: &[u8]) -> nix::Result<()> {
    let fd = std::io::stderr();
    while !buf.is_empty() {
        match nix::unistd::write(&fd, buf) {
            Ok(0) => return Err(nix::errno::Errno::EIO),
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `buf` with every line after the first indented by two spaces; a trailing line break
/// stays the record's end.
fn indent_continuations(buf: &[u8]) -> Vec<u8> {
    let (body, end) = match buf.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (buf, &b""[..]),
    };
    let mut out = Vec::with_capacity(buf.len() + 16);
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\n  ");
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(end);
    out
}

/// One JSON object per record: `timestamp`, `level`, `message`, then the event's fields
/// in the order given; [`PROBLEMS`] as the array it holds.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields(vec![
            ("timestamp".to_owned(), timestamp.into()),
            ("level".to_owned(), event.metadata().level().as_str().into()),
        ]);
        // The fields of the spans the event is in (a reload, a connection), outermost
        // first, so that JSON logs can be filtered on them.
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            if let Some(span_fields) = span.extensions().get::<JsonFields>() {
                fields.0.extend(span_fields.0.iter().cloned());
            }
        }
        event.record(&mut fields);
        // Written by hand to keep the order: the timestamp and level first.
        let mut line = String::from("{");
        for (i, (name, value)) in fields.0.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&serde_json::Value::from(name.as_str()).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

struct JsonFields(Vec<(String, serde_json::Value)>);

/// Keeps each span's fields as JSON values, for [`JsonLines`] to put in every record
/// made inside the span.
struct SpanFields;

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for SpanFields {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields(Vec::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<JsonFields>() {
                values.record(fields);
            }
        }
    }
}

impl JsonFields {
    /// Adds a field; one of the same name (a span's, when an event repeats it) is replaced.
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match self.0.iter_mut().find(|(name, _)| name == field.name()) {
            Some((_, old)) => *old = value,
            None => self.0.push((field.name().to_owned(), value)),
        }
    }
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let value = match field.name() {
            PROBLEMS => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
            _ => serde_json::Value::String(text),
        };
        self.put(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            PROBLEMS => self.record_debug(field, &format_args!("{value}")),
            _ => self.put(field, value.into()),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::indent_continuations;

    #[test]
    fn continuation_lines_are_indented() {
        assert_eq!(indent_continuations(b"one\n"), b"one\n");
        assert_eq!(indent_continuations(b"a\nb\n  fix: c\n"), b"a\n  b\n    fix: c\n");
        assert_eq!(indent_continuations(b"a\nb"), b"a\n  b");
    }
}

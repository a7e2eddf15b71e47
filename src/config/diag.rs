//! Config diagnostics: every problem found in the connection-config directory, each
//! naming the file, the line where it is known, what is wrong and what to do. They are
//! collected, not thrown, so that one run reports all of them.

use crate::error::{Class, Classify};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a diagnostic points: a file and, where known, a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Shared by every origin in one file: the model keeps one per parameter, variable
    /// and reference, tens of thousands on a large directory.
    pub file: Arc<Path>,
    pub line: Option<usize>,
}

impl Origin {
    pub fn file(file: impl AsRef<Path>) -> Self {
        Origin { file: Arc::from(file.as_ref()), line: None }
    }

    pub fn at(file: impl AsRef<Path>, line: usize) -> Self {
        Origin { file: Arc::from(file.as_ref()), line: Some(line) }
    }

    /// A line of `file`, sharing its path rather than copying it.
    pub fn shared(file: &Arc<Path>, line: usize) -> Self {
        Origin { file: Arc::clone(file), line: Some(line) }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.file.display(), line),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// One problem: `message` says what is wrong, `fix` what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    pub message: String,
    pub fix: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of one load: errors, and warnings (a likely typo, docs/config.md) that do
/// not stop it. No errors means the directory is valid.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    /// One problem and what to do about it.
    pub fn error(&mut self, origin: Origin, message: impl Into<String>, fix: impl Into<String>) {
        self.errors.push(Diagnostic { origin, message: message.into(), fix: Some(fix.into()) });
    }

    /// Something that is probably a mistake but leaves the directory valid.
    pub fn warn(&mut self, origin: Origin, message: impl Into<String>, fix: impl Into<String>) {
        self.warnings.push(Diagnostic { origin, message: message.into(), fix: Some(fix.into()) });
    }

    /// Whether there is no error (warnings do not count).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The number of errors.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// The errors.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.errors.iter()
    }

    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Makes every warning an error (`--strict`, docs/commands.md), its message saying so.
    pub fn warnings_as_errors(&mut self) {
        for mut d in std::mem::take(&mut self.warnings) {
            d.message.push_str(" (an error under --strict)");
            self.errors.push(d);
        }
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}

/// The connection-config directory is invalid. Exit code 78.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub dir: PathBuf,
    pub diagnostics: Diagnostics,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        write!(f, "invalid connection config in {} ({n} error{})", self.dir.display(), if n == 1 { "" } else { "s" })?;
        for d in self.diagnostics.iter() {
            write!(f, "\n{d}")?;
        }
        for d in self.diagnostics.warnings() {
            write!(f, "\nwarning: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Classify for ConfigError {
    fn class(&self) -> Class {
        Class::Config
    }
}

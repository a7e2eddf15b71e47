//! What kind of failure an error is, as every layer reports it: one [`Class`] per error,
//! through the one [`Classify`] trait. The exit code (docs/commands.md), whether retrying may help,
//! and the `result` label of `/metrics` are all read from the class, so no module keeps
//! its own answer to those questions.
//!
//! Boundary: a leaf. It names no module's error; each module implements [`Classify`] for
//! its own, and the top (`commands`) walks an error chain to the first class.

use crate::exit;

/// The kinds of failure connd tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The command line is wrong: an unknown flag, a bad value, no command.
    Usage,
    /// The config directory, a `file:` source, or a setting made from the flags (a URL,
    /// a TLS file) is wrong: fixing it, not waiting, helps.
    Config,
    /// The control plane or the token endpoint refused: the credential is wrong or may
    /// not read this connection.
    Refused,
    /// The peer could not be reached or was busy (cannot connect, timeout, 429, 5xx):
    /// the one transient class.
    Unavailable,
    /// The peer answered, but with something connd cannot use; asking again gives the
    /// same answer.
    BadAnswer,
    /// The socket cannot be created (a live server or another file is in the way).
    CantCreate,
    /// The workload's command was not found.
    CommandNotFound,
    /// The workload's command cannot be run (a directory, no `x` permission).
    NotExecutable,
    /// Anything else: a failure of connd itself or of the machine.
    Internal,
}

impl Class {
    /// The exit code of docs/commands.md for a run that ends with this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Class::Usage => exit::USAGE,
            Class::Config => exit::CONFIG,
            Class::Refused => exit::REFUSED,
            Class::Unavailable | Class::BadAnswer => exit::UNAVAILABLE,
            Class::CantCreate => exit::CANT_CREATE,
            Class::CommandNotFound => exit::NOT_FOUND,
            Class::NotExecutable => exit::NOT_EXECUTABLE,
            Class::Internal => exit::FAILURE,
        }
    }

    /// Whether trying again later may succeed: the network or the peer, not a setting
    /// that fails the same way every time.
    pub fn is_transient(self) -> bool {
        self == Class::Unavailable
    }
}

/// An error that knows its class.
pub trait Classify {
    fn class(&self) -> Class;
}

/// `e` and its sources, `: `-separated, as a log or message shows an error's whole cause. A
/// source whose text the line already holds (a `{source}` in a message above it) is not
/// repeated: anyhow's `{:#}` would print it two or three times.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::Class;

    #[test]
    fn exit_codes_of_spec_section_3() {
        let codes = [
            (Class::Usage, 64),
            (Class::Config, 78),
            (Class::Refused, 77),
            (Class::Unavailable, 69),
            (Class::BadAnswer, 69),
            (Class::CantCreate, 73),
            (Class::CommandNotFound, 127),
            (Class::NotExecutable, 126),
            (Class::Internal, 1),
        ];
        for (class, code) in codes {
            assert_eq!(class.exit_code(), code, "{class:?}");
            assert_eq!(class.is_transient(), class == Class::Unavailable, "{class:?}");
        }
    }
}

#[cfg(test)]
mod chain_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind /run/x.sock: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_quotes_is_said_once() {
        let e = anyhow::Error::new(Bind { source: std::io::Error::from_raw_os_error(13) }).context("serving");
        assert_eq!(format!("{e:#}").matches("os error 13").count(), 2, "anyhow repeats it");
        assert_eq!(super::chain(e.as_ref()), "serving: cannot bind /run/x.sock: Permission denied (os error 13)");
    }
}

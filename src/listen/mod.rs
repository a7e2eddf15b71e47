//! Local listeners, shared by every server connd runs (the API in `serve`, the
//! `--metrics-listen` endpoint, the egress proxy): binding a Unix socket (`socket`), the
//! peer-credential check of its callers (`auth`), and the accept loop with its limits and
//! bounded drain (`conn`). Boundary: routes and answers are the servers' own.

pub mod auth;
pub mod conn;
pub mod socket;

use crate::error::{Class, Classify};
use std::net::SocketAddr;

/// A TCP address given by `flag` cannot be listened on (in use, not local, no
/// permission). Exit 73.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {flag} {addr}: {error}; choose another address or port")]
pub struct ListenError {
    pub flag: &'static str,
    pub addr: SocketAddr,
    // Not `source`: the message already says it, and a source would be printed again.
    pub error: std::io::Error,
}

impl Classify for ListenError {
    fn class(&self) -> Class {
        Class::CantCreate
    }
}

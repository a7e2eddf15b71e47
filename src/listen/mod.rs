//! Local listeners, shared by every server connd runs (the API in `serve`, the
//! `--metrics-listen` endpoint, the egress proxy): binding a Unix socket (`socket`), the
//! peer-credential check of its callers (`auth`), and the accept loop with its limits and
//! bounded drain (`conn`). Boundary: routes and answers are the servers' own.

pub mod auth;
pub mod conn;
pub mod socket;

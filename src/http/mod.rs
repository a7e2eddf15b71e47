//! Outbound HTTP: the client that the control plane and the token cache use, and what it
//! stands on. A leaf: it knows nothing of connections or values.
//! - `client`: one request, one connection, a deadline and a body cap.
//! - `connect`: TCP, proxy tunnels and TLS as a reusable `tower` connector.
//! - `error`: `HttpError`, what either of them reports, with its class.
//! - `proxy`: which requests go through a proxy (`HTTPS_PROXY`, `NO_PROXY`, ...).
//! - `tls`: the rustls client configuration; `tls_fault`: every TLS failure in words.
//! - `url`: which URLs connd may call; `json`: JSON errors without their content;
//!   `deadline`: deadlines from user-given waits without overflow.

pub mod client;
pub mod connect;
pub mod deadline;
pub mod error;
pub mod json;
pub mod proxy;
pub mod tls;
pub mod tls_fault;
pub mod url;

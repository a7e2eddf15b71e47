//! Outbound HTTP: the client that the control plane and the token cache use, and the TLS
//! setup under it. A leaf: it knows nothing of connections or values.

pub mod client;
pub mod tls;

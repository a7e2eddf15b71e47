//! Exit codes of SPEC §3, and the mapping from an error chain to one of them.

use crate::config::ConfigError;
use crate::exec::ExecError;
use crate::reload::StartupError;
use crate::run::supervise::SuperviseError;
use crate::serve::api::server::BindError;
use crate::serve::probe::ProbeError;
use crate::source::values::ValueError;

pub const OK: u8 = 0;
pub const USAGE: u8 = 64;
pub const UNAVAILABLE: u8 = 69;
pub const REFUSED: u8 = 77;
pub const CONFIG: u8 = 78;
/// The socket cannot be created (sysexits' EX_CANTCREAT).
pub const CANT_CREATE: u8 = 73;

/// The exit code for a failure: the first cause in the chain that has one decides.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<ConfigError>() {
            return CONFIG;
        }
        if let Some(e) = cause.downcast_ref::<ValueError>() {
            return match e {
                ValueError::File { .. } | ValueError::Nul { .. } => CONFIG,
                ValueError::Missing { .. } => UNAVAILABLE,
            };
        }
        if let Some(e) = cause.downcast_ref::<crate::source::controlplane::ControlPlaneError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<crate::source::oauth::OAuthError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<crate::source::remote::SetupError>() {
            return e.exit_code();
        }
        if cause.is::<ProbeError>() {
            return UNAVAILABLE;
        }
        if let Some(e) = cause.downcast_ref::<crate::proxy::ListenError>() {
            return e.exit_code();
        }
        if cause.is::<BindError>() {
            return CANT_CREATE;
        }
        if let Some(e) = cause.downcast_ref::<StartupError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<ExecError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<SuperviseError>() {
            return e.exit_code();
        }
    }
    1
}

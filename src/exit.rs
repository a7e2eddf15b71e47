//! Exit codes of docs/commands.md (sysexits where one fits). Which error gets which code is
//! `error::Class::exit_code`; the walk over an error chain is `commands::exit_code`.

pub const OK: u8 = 0;
/// Any failure without a class of its own.
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 64;
pub const UNAVAILABLE: u8 = 69;
/// The socket cannot be created (sysexits' EX_CANTCREAT).
pub const CANT_CREATE: u8 = 73;
pub const REFUSED: u8 = 77;
pub const CONFIG: u8 = 78;
/// The workload's command cannot be run (as a shell reports it).
pub const NOT_EXECUTABLE: u8 = 126;
/// The workload's command was not found (as a shell reports it).
pub const NOT_FOUND: u8 = 127;

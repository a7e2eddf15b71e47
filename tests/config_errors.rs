//! One invalid directory per config error: exit 78 and the message a user reads.

use crate::support::*;

#[test]
fn a_missing_directory_is_a_config_error() {
    let out = run(&["check", "--config-dir", "/nonexistent/connd"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["/nonexistent/connd", "cannot read the config directory", "fix: pass --config-dir"]);
}

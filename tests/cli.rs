//! `check`, `env` and `exec` of the real binary on valid directories.

use crate::support::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example");

#[test]
fn check_prints_the_plan_with_secrets_redacted() {
    let out = run(&["check", "--config-dir", EXAMPLE]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(
        &out.stdout,
        &[
            "component user-portal in project hr-project",
            "CHOREO_HR_SERVICE_SERVICEURL",
            "https://hr.internal.example/users/v1",
            "ok: 4 connections, 14 variables",
        ],
    );
    for secret in ["s3cr3t-portal-oauth", "pg-portal-example-pw", "maps-key-example-1234", "inv-7d1e0c"] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{secret} leaked:\n{out:?}");
    }
}

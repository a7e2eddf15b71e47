//! The systemd files as a user installs them (`deploy/systemd/install`, docs in
//! deploy/README.md): the user, group and `/etc/connd` exist afterwards, and the unit's
//! system-call filter, read from systemd's own sets, leaves connd the calls
//! `--socket-group` needs.

use crate::support::*;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const SYSTEMD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd");

fn systemd_analyze(args: &[&str]) -> String {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze runs (CI installs Debian's systemd package, as deploy/check does)");
    assert!(out.status.success(), "systemd-analyze {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The system calls of a `SystemCallFilter=` item: a call, or a `@set` expanded with
/// systemd's own list (sets inside sets included).
fn expand(item: &str, out: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_owned());
        return;
    }
    let listing = systemd_analyze(&["syscall-filter", item]);
    for line in listing.lines().skip(1).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        expand(line, out);
    }
}

/// The calls a unit's `SystemCallFilter=` lines allow, applied in order as systemd does:
/// the first allow line sets the list, a `~` line removes, a later allow line adds back.
fn allowed_calls(unit: &str) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    for value in unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")) {
        let (deny, items) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let mut calls = BTreeSet::new();
        items.split_whitespace().for_each(|i| expand(i, &mut calls));
        if deny {
            allowed.retain(|c| !calls.contains(c));
        } else {
            allowed.extend(calls);
        }
    }
    allowed
}

#[test]
fn connd_service_s_filter_leaves_the_calls_socket_group_needs() {
    let unit = std::fs::read_to_string(Path::new(SYSTEMD).join("connd.service")).unwrap();
    assert!(unit.contains("--socket") || unit.contains("CONND_SOCKET"), "the unit serves a socket");
    let allowed = allowed_calls(&unit);
    assert!(allowed.contains("bind") && allowed.contains("accept4"), "the filter was not read: {allowed:?}");
    for call in ["chown", "fchown", "fchownat", "lchown"] {
        assert!(allowed.contains(call), "connd.service's SystemCallFilter= denies {call}, which --socket-group needs");
    }
    for call in ["mount", "reboot", "setrlimit"] {
        assert!(!allowed.contains(call), "{call} should stay denied");
    }
}

#[test]
fn the_install_step_creates_the_user_the_group_and_the_config_directory() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(Path::new(SYSTEMD).join("install"))
        .args(["--examples", "--bin", connd_bin(), "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let r = root.path();
    for unit in ["connd.service", "example-app.service", "example-app-files.service", "example-app-dotenv.service"] {
        assert!(r.join("etc/systemd/system").join(unit).is_file(), "{unit} not installed");
    }
    assert!(r.join("usr/local/bin/connd").is_file() && r.join("etc/default/connd").is_file());
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("connd:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no group connd in {group}"));
    assert!(std::fs::read_to_string(r.join("etc/passwd")).unwrap().contains("\nconnd:") || group.starts_with("connd"));
    let conf = std::fs::metadata(r.join("etc/connd")).expect("/etc/connd created");
    assert_eq!((conf.mode() & 0o7777, conf.uid(), conf.gid()), (0o750, 0, gid), "/etc/connd root:connd 0750");
    // The installed binary is the one given, and the units name it.
    let out = Command::new(r.join("usr/local/bin/connd")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("connd "));
}

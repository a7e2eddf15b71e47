//! TLS failures with real certificates (rcgen, and the `openssl` CLI for X.509 v1): each
//! run of the binary says the true cause and the fix (docs/control-plane.md), and a permanent fault is
//! tried once, not retried until the startup timeout.

use crate::support::control_plane::{FakeControlPlane, Pki, Reply};
use crate::support::*;
use rcgen::{CertificateParams, DnType};
use std::path::Path;
use std::process::Command;

const ID: &str = HR_ID;

fn fixture() -> Fixture {
    hr_remote()
}

/// A fake control plane presenting a certificate from `params`, signed by its CA.
fn serving(params: CertificateParams) -> FakeControlPlane {
    let mut pki = Pki::new();
    pki.set_server(params);
    let cp = FakeControlPlane::start_with(pki, false);
    cp.script(ID, vec![Reply::ok("1", &[("ConsumerKey", "k")])]);
    cp
}

/// `connd env` against `cp` trusting its CA; a startup timeout long enough for many
/// retries, so that a fault tried once shows as one connection.
fn env(fx: &Fixture, url: &str, cp: &FakeControlPlane, extra: &[&str]) -> Run {
    let ca = cp.ca_file().display().to_string();
    let mut args = vec!["--control-plane", url, "--ca-file", &ca, "--startup-timeout", "30s"];
    args.extend_from_slice(extra);
    fx.run("env", &args)
}

#[track_caller]
fn assert_tried_once(cp: &FakeControlPlane, out: &Run) {
    assert_eq!(cp.connections(), 1, "a TLS fault is permanent: one attempt, no retries\n{out:?}");
    assert!(cp.requests().is_empty(), "{out:?}");
}

#[test]
fn a_server_certificate_with_only_a_cn_says_it_lacks_a_subject_alt_name() {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let (fx, cp) = (fixture(), serving(params));
    let out = env(&fx, &cp.url(), &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &["certificate has no subjectAltName", "its CN is not used", "reissue it with a subjectAltName for 127.0.0.1"],
    );
    assert!(!out.stderr.contains("pass --ca-file"), "the CA was given and is right:\n{out:?}");
    assert_tried_once(&cp, &out);
}

#[test]
fn a_name_mismatch_lists_the_names_the_certificate_holds() {
    let params = CertificateParams::new(vec!["cp.other.example".to_string(), "10.9.9.9".to_string()]).unwrap();
    let (fx, cp) = (fixture(), serving(params));
    let out = env(&fx, &cp.url(), &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &["is not valid for \"127.0.0.1\": it names only \"cp.other.example\", \"10.9.9.9\"", "subjectAltName"],
    );
    assert_tried_once(&cp, &out);
}

#[test]
fn an_expired_certificate_gives_its_expiry_date() {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 2);
    let (fx, cp) = (fixture(), serving(params));
    let out = env(&fx, &cp.url(), &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["certificate expired on Sat, 02 Jan 2021 00:00:00 GMT", "renew it"]);
    assert_tried_once(&cp, &out);
}

#[test]
fn an_unknown_issuer_names_the_ca_file_that_did_not_sign_it() {
    let (fx, cp) = (fixture(), serving(CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap()));
    let other = Pki::new();
    let ca = other.ca_file.display().to_string();
    let out = fx.run("env", &["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", "30s"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &[&format!("no CA in --ca-file {ca} signed it"), "pass --ca-file with the CA"]);
    assert_tried_once(&cp, &out);
}

/// `openssl x509 -req` without `-extfile`: the X.509 v1 certificate a user gets by
/// following an old how-to. Returns the certificate and key PEM files.
fn openssl_v1(pki: &Pki, dir: &Path, name: &str, cn: &str) -> (String, String) {
    let path = |file: &str| dir.join(file).display().to_string();
    std::fs::write(path("ca.key"), pki.ca_key_pem()).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("openssl runs (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (key, csr, cert) = (path(&format!("{name}.key")), path(&format!("{name}.csr")), path(&format!("{name}.pem")));
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
    openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &key, "-out", &format!("{key}.p8")]);
    openssl(&["req", "-new", "-key", &key, "-subj", &format!("/CN={cn}"), "-out", &csr]);
    let ca = pki.ca_file.display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &cert,
    ]);
    let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in", &cert]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"), "openssl made no v1 certificate");
    (cert, format!("{key}.p8"))
}

#[test]
fn an_x509_v1_server_certificate_says_reissue_as_v3() {
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_v1(&pki, dir.path(), "server", "127.0.0.1");
    pki.set_server_pem(&std::fs::read_to_string(cert).unwrap(), &std::fs::read_to_string(key).unwrap());
    let cp = FakeControlPlane::start_with(pki, false);
    let fx = fixture();
    let out = env(&fx, &cp.url(), &cp, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &["the server's certificate for 127.0.0.1 is an X.509 v1 certificate", "reissue it as v3"],
    );
    assert_tried_once(&cp, &out);
}

#[test]
fn an_x509_v1_client_certificate_is_named_as_connds_own() {
    let cp = FakeControlPlane::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_v1(&cp.pki, dir.path(), "client", "connd-client");
    let fx = fixture();
    let out = env(&fx, &cp.url(), &cp, &["--client-cert", &cert, "--client-key", &key]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            &format!("cannot use client certificate {cert}"),
            "X.509 v1 certificate",
            "connd's own (--client-cert), not the server's",
            "reissue it as v3",
        ],
    );
    assert!(!out.stderr.contains("invalid peer certificate"), "{out:?}");
    assert_eq!(cp.connections(), 0, "a setup error is found before any connection\n{out:?}");
}

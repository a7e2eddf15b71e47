//! Outbound HTTP through a real forward proxy (tinyproxy) as docs/commands.md has it: the control
//! plane over CONNECT, a token endpoint over plain http in absolute form, `NO_PROXY`,
//! `--no-proxy-env`, a proxy that refuses CONNECT, and proxy credentials used but never
//! logged. tinyproxy's log is the proof of what went through it.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::oidc::{Client, OidcProvider};
use crate::support::tinyproxy::{Options, Tinyproxy};
use crate::support::*;
use base64::Engine;

const ID: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const PROXY_PASSWORD: &str = "pr0xy-s3cret";

fn fixture() -> Fixture {
    Fixture::with(
        &component_yaml(&[("hr-connection", "service:/HRProject/users/v1/ad088/PUBLIC")]),
        &connection(
            ID,
            "hr-connection",
            &[("ServiceURL", "https://hr.internal/v1"), ("ConsumerKey", "{ remote: true }")],
        ),
    )
}

fn control_plane() -> FakeControlPlane {
    let cp = FakeControlPlane::start(false);
    cp.script(ID, vec![Reply::ok("1", &[("ConsumerKey", "key-via-proxy")])]);
    cp
}

/// `connd env` against `cp` with these environment variables and flags, logging at
/// trace level so that a leak at any level shows.
fn env(fx: &Fixture, cp: &FakeControlPlane, vars: &[(&str, &str)], extra: &[&str]) -> Run {
    env_within(fx, cp, "30s", vars, extra)
}

fn env_within(fx: &Fixture, cp: &FakeControlPlane, timeout: &str, vars: &[(&str, &str)], extra: &[&str]) -> Run {
    let ca = cp.ca_file().display().to_string();
    let mut cmd = connd();
    cmd.args(["--log-level", "trace", "env", "--config-dir"]).arg(fx.path());
    cmd.args(["--control-plane", &cp.url(), "--ca-file", &ca, "--startup-timeout", timeout]).args(extra);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("connd runs").into()
}

fn connects(proxy: &Tinyproxy) -> Vec<String> {
    proxy.requests().into_iter().filter(|r| r.starts_with("CONNECT ")).collect()
}

#[test]
fn the_control_plane_is_reached_through_https_proxy_with_connect() {
    let (fx, cp, proxy) = (fixture(), control_plane(), Tinyproxy::start(Options::default()));
    let out = env(&fx, &cp, &[("HTTPS_PROXY", &proxy.url(None))], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["CHOREO_HR_CONNECTION_CONSUMERKEY='key-via-proxy'"]);
    let port = cp.url().rsplit(':').next().unwrap().to_owned();
    assert_eq!(connects(&proxy), [format!("CONNECT 127.0.0.1:{port} HTTP/1.1")], "{}", proxy.log());
    assert_eq!(cp.requests().len(), 1);
}

#[test]
fn proxy_credentials_are_sent_and_never_logged() {
    let auth = Options { basic_auth: Some(("bob".into(), PROXY_PASSWORD.into())), ..Options::default() };
    let (fx, cp, proxy) = (fixture(), control_plane(), Tinyproxy::start(auth));
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("bob:{PROXY_PASSWORD}"));
    let out = env(&fx, &cp, &[("https_proxy", &proxy.url(Some(("bob", PROXY_PASSWORD))))], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(connects(&proxy).len(), 1, "{}", proxy.log());
    assert!(!out.stderr.contains(PROXY_PASSWORD) && !out.stderr.contains(&encoded), "{out:?}");

    // Wrong credentials: the proxy's refusal (tinyproxy answers 401), said as such, not retried, and still no password.
    let out = env(&fx, &cp, &[("HTTPS_PROXY", &proxy.url(Some(("bob", "wr0ng-pw"))))], &[]);
    assert_eq!(out.code, 69, "{out:?}");
    let url = proxy.url(None);
    assert_contains(
        &out.stderr,
        &[&format!("the proxy {url} refused the credentials in its URL ("), "fix the user and password"],
    );
    assert!(!out.stderr.contains("wr0ng-pw"), "{out:?}");
    assert_eq!(connects(&proxy).len(), 2, "a 407 is not retried:\n{}", proxy.log());
}

/// A component whose OAuth token comes from `idp`'s token endpoint (plain http).
fn oauth_fixture(idp: &OidcProvider) -> Fixture {
    let descriptor = format!(
        "---\nkind: Connection\nid: {ID}\nname: hr-connection\nproject: hr-project\nvisibility: project\n\
         security: oauth2\noauth: {{ scopes: [read] }}\nparameters:\n  ServiceURL: https://hr.internal\n  \
         TokenURL: {}\n  ConsumerKey: portal\n  ConsumerSecret: {{ value: \"portal-s3cr3t\" }}\n",
        idp.token_url()
    );
    let component = component_yaml(&[("hr-connection", "thirdparty:svc/v1")])
        + "configurations:\n  env:\n    - name: TOKEN\n      valueFrom:\n        connectionRef: { name: hr-connection, key: AccessToken }\n";
    Fixture::with(&component, &descriptor)
}

fn env_through_http_proxy(fx: &Fixture, proxy_url: &str) -> Run {
    let out = connd()
        .args(["--log-level", "trace", "env", "--config-dir"])
        .arg(fx.path())
        .env("HTTP_PROXY", proxy_url)
        .output()
        .expect("connd runs");
    Run::from(out)
}

#[test]
fn a_token_endpoint_over_http_goes_through_http_proxy_in_absolute_form() {
    let idp = OidcProvider::start(&[Client::basic("portal", "portal-s3cr3t", "read")], 60);
    let auth = Options { basic_auth: Some(("bob".into(), PROXY_PASSWORD.into())), ..Options::default() };
    let proxy = Tinyproxy::start(auth);
    let fx = oauth_fixture(&idp);
    let out = env_through_http_proxy(&fx, &proxy.url(Some(("bob", PROXY_PASSWORD))));
    assert_eq!(out.code, 0, "{out:?}");
    assert_contains(&out.stdout, &["TOKEN="]);
    assert_eq!(idp.stats().token_successes, 1);
    assert_eq!(proxy.requests(), [format!("POST {} HTTP/1.1", idp.token_url())], "{}", proxy.log());
    assert!(!out.stderr.contains(PROXY_PASSWORD) && !out.stderr.contains("portal-s3cr3t"), "{out:?}");
}

#[test]
fn an_http_proxy_refusing_its_credentials_on_a_forwarded_request_is_named_and_not_retried() {
    let idp = OidcProvider::start(&[Client::basic("portal", "portal-s3cr3t", "read")], 60);
    let auth = Options { basic_auth: Some(("bob".into(), PROXY_PASSWORD.into())), ..Options::default() };
    let proxy = Tinyproxy::start(auth);
    let fx = oauth_fixture(&idp);
    let url = proxy.url(None);
    // With a wrong password tinyproxy answers 401 and resets the connection; without one, 407.
    let out = env_through_http_proxy(&fx, &proxy.url(Some(("bob", "wr0ng-pw"))));
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &[
            &format!("the proxy {url} refused the credentials in its URL (401 Unauthorized)"),
            "fix the user and password",
        ],
    );
    assert!(!out.stderr.contains("wr0ng-pw") && !out.stderr.contains("error reading a body"), "{out:?}");
    assert_eq!(proxy.requests().len(), 1, "a refused credential is not retried:\n{}", proxy.log());

    let out = env_through_http_proxy(&fx, &url);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(
        &out.stderr,
        &[&format!("the proxy {url} asks for credentials (407 Proxy Authentication Required)")],
    );
    assert_eq!(proxy.requests().len(), 2, "a missing credential is not retried:\n{}", proxy.log());
    assert_eq!(idp.stats().token_requests, 0);
}

#[test]
fn no_proxy_names_the_hosts_that_bypass_the_proxy() {
    let (fx, cp, proxy) = (fixture(), control_plane(), Tinyproxy::start(Options::default()));
    let port = cp.url().rsplit(':').next().unwrap().to_owned();
    let with_port = format!("example.com,127.0.0.1:{port}");
    for no_proxy in ["127.0.0.1", "localhost, 127.0.0.0/8", "*", with_port.as_str()] {
        let out = env(&fx, &cp, &[("HTTPS_PROXY", &proxy.url(None)), ("NO_PROXY", no_proxy)], &[]);
        assert_eq!(out.code, 0, "NO_PROXY={no_proxy}: {out:?}");
        assert!(proxy.requests().is_empty(), "NO_PROXY={no_proxy} went through the proxy:\n{}", proxy.log());
    }
    // Another port of the same host, and a name that is only a suffix of another: proxied.
    for no_proxy in ["127.0.0.1:1", "0.0.1"] {
        let before = connects(&proxy).len();
        let out = env(&fx, &cp, &[("HTTPS_PROXY", &proxy.url(None)), ("no_proxy", no_proxy)], &[]);
        assert_eq!(out.code, 0, "no_proxy={no_proxy}: {out:?}");
        assert_eq!(connects(&proxy).len(), before + 1, "no_proxy={no_proxy} bypassed the proxy");
    }
}

#[test]
fn no_proxy_env_ignores_the_proxy_variables() {
    let (fx, cp) = (fixture(), control_plane());
    // Nothing listens on port 1: a request through that proxy cannot succeed.
    let dead = [("HTTPS_PROXY", "http://127.0.0.1:1"), ("ALL_PROXY", "http://127.0.0.1:1")];
    let out = env(&fx, &cp, &dead, &["--no-proxy-env"]);
    assert_eq!(out.code, 0, "{out:?}");

    let out = env_within(&fx, &cp, "1s", &dead, &[]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["cannot connect to the proxy http://127.0.0.1:1"]);
}

#[test]
fn a_proxy_that_refuses_connect_is_reported_clearly() {
    let refusing = Options { connect_port: Some(443), ..Options::default() };
    let (fx, cp, proxy) = (fixture(), control_plane(), Tinyproxy::start(refusing));
    let out = env(&fx, &cp, &[("HTTPS_PROXY", &proxy.url(None))], &[]);
    assert_eq!(out.code, 69, "{out:?}");
    let port = cp.url().rsplit(':').next().unwrap().to_owned();
    assert_contains(
        &out.stderr,
        &[
            &format!(
                "the proxy {} refused to open a tunnel (CONNECT) to 127.0.0.1:{port} (403 Forbidden)",
                proxy.url(None)
            ),
            "list 127.0.0.1 in NO_PROXY",
        ],
    );
    assert_eq!(connects(&proxy).len(), 1, "a refusal by the proxy's policy is not retried:\n{}", proxy.log());
    assert_eq!(cp.connections(), 0);
}

#[test]
fn an_unusable_proxy_variable_is_a_config_error_that_hides_its_value() {
    let (fx, cp) = (fixture(), control_plane());
    let out = env(&fx, &cp, &[("HTTPS_PROXY", "socks5://bob:pr0xy-s3cret@127.0.0.1:1080")], &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["HTTPS_PROXY names a socks5:// proxy", "--no-proxy-env"]);
    assert!(!out.stderr.contains(PROXY_PASSWORD), "{out:?}");
    // A port out of range is not the default port: nothing is tried through it.
    let out = env(&fx, &cp, &[("HTTPS_PROXY", "http://bob:pr0xy-s3cret@127.0.0.1:99999")], &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["HTTPS_PROXY is not a proxy URL", "--no-proxy-env"]);
    assert!(!out.stderr.contains(PROXY_PASSWORD) && !out.stderr.contains("99999"), "{out:?}");
}

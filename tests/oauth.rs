//! OAuth client-credentials tokens against a real OpenID provider (oidc-provider): the
//! binary's `env`/`exec` with mapped `AccessToken`s, and the token cache's sharing,
//! single flight and renewal, counted at the provider.

use crate::support::control_plane::{FakeControlPlane, Reply};
use crate::support::oidc::{Client, OidcProvider};
use crate::support::*;
use connd::http::client::HttpClient;
use connd::http::proxy::Proxies;
use connd::http::url::check_url;
use connd::source::client_auth::Material;
use connd::source::oauth::{AppKey, Credentials, TokenCache};
use std::sync::Arc;
use std::time::Duration;

const HR: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const PAYROLL: &str = "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40";
const SECRET: &str = "portal-s3cr3t";

#[test]
fn exec_gives_the_workload_a_token_from_the_provider() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 60);
    let fx = Fixture::with(
        &component_with_tokens(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "portal", SECRET, "basic"),
    );
    let out = fx.run("exec", &["--", "sh", "-c", "printf '%s' \"$HR_CONNECTION_TOKEN\""]);
    assert_eq!(out.code, 0, "{out:?}");
    // oidc-provider's opaque access tokens: 43 characters of base64url.
    assert_eq!(out.stdout.len(), 43, "{out:?}");
    assert!(out.stdout.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{out:?}");
    let stats = idp.stats();
    assert_eq!((stats.token_requests, stats.token_successes, stats.client_secret_basic), (1, 1, 1), "{stats:?}");
}

#[test]
fn connections_sharing_a_client_cause_one_token_call() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 60);
    let connections = oauth_connection(HR, "hr-connection", idp.token_url(), "portal", SECRET, "basic")
        + &oauth_connection(PAYROLL, "payroll", idp.token_url(), "portal", SECRET, "basic");
    let fx = Fixture::with(&component_with_tokens(&["hr-connection", "payroll"]), &connections);
    let out = fx.run("env", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(token_in(&out.stdout, "HR_CONNECTION_TOKEN"), token_in(&out.stdout, "PAYROLL_TOKEN"));
    assert_eq!(idp.token_requests(), 1);
}

#[test]
fn client_secret_post_sends_the_credentials_in_the_body() {
    let idp = OidcProvider::start(&[Client::post("portal", SECRET, "read")], 60);
    let fx = Fixture::with(
        &component_with_tokens(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "portal", SECRET, "post"),
    );
    let out = fx.run("env", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let stats = idp.stats();
    assert_eq!((stats.token_successes, stats.client_secret_post, stats.client_secret_basic), (1, 1, 0), "{stats:?}");
}

#[test]
fn basic_auth_encodes_id_and_secret_before_base64() {
    // RFC 6749 §2.3.1: a secret with reserved characters must be form-urlencoded first.
    let odd = "p@ss:w%rd +&=";
    let idp = OidcProvider::start(&[Client::basic("portal:app", odd, "read")], 60);
    let fx = Fixture::with(
        &component_with_tokens(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "\"portal:app\"", odd, "basic"),
    );
    let out = fx.run("env", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(idp.token_successes(), 1);
}

#[test]
fn a_wrong_secret_exits_77_and_says_so() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 60);
    let fx = Fixture::with(
        &component_with_tokens(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", idp.token_url(), "portal", "not-the-secret", "basic"),
    );
    let out = fx.run("env", &["--startup-timeout", "5s"]);
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(
        &out.stderr,
        &["connection \"hr-connection\"", idp.token_url(), "refused client \"portal\"", "invalid_client", "permanent"],
    );
    assert!(!out.stderr.contains("not-the-secret"), "the secret leaked:\n{out:?}");
    assert_eq!(idp.token_requests(), 1, "invalid_client is permanent and must not be retried");
}

/// Bound then released: nothing listens (see control_plane's `a_refused_connection_exits_69`
/// for why only the class of the cause is asserted).
#[test]
fn an_unreachable_token_endpoint_exits_69() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/token");
    let fx = Fixture::with(
        &component_with_tokens(&["hr-connection"]),
        &oauth_connection(HR, "hr-connection", &url, "portal", SECRET, "basic"),
    );
    let out = fx.run("env", &["--startup-timeout", "500ms"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert_contains(&out.stderr, &["connection \"hr-connection\"", &url, "is unavailable", "last cause:"]);
}

#[test]
fn client_credentials_can_come_from_the_control_plane() {
    let idp = OidcProvider::start(&[Client::basic("remote-client", SECRET, "read")], 60);
    let cp = FakeControlPlane::start(false);
    cp.script(HR, vec![Reply::ok("3", &[("ConsumerKey", "remote-client"), ("ConsumerSecret", SECRET)])]);
    let descriptor = format!(
        "---\nkind: Connection\nid: {HR}\nname: hr-connection\nproject: hr-project\nvisibility: project\n\
         security: oauth2\nparameters:\n  TokenURL: {}\n  ConsumerKey: {{ remote: true }}\n  \
         ConsumerSecret: {{ remote: true }}\n",
        idp.token_url()
    );
    let fx = Fixture::with(&component_with_tokens(&["hr-connection"]), &descriptor);
    let ca = cp.ca_file().display().to_string();
    let out = fx.run("env", &["--control-plane", &cp.url(), "--ca-file", &ca]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(token_in(&out.stdout, "HR_CONNECTION_TOKEN").len(), 43);
    assert_eq!(idp.token_successes(), 1);
}

/// `portal`'s credentials at `idp`, with `client_secret_basic`.
fn credentials(idp: &OidcProvider) -> Credentials {
    let auth = Material::Basic { secret: SECRET.into() };
    Credentials {
        key: AppKey::new(idp.token_url(), "portal", &["read".to_owned()]),
        url: check_url(idp.token_url(), false).unwrap(),
        auth,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn a_thousand_concurrent_requests_cause_one_token_call() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 60);
    runtime().block_on(async {
        let cache = TokenCache::new(
            Arc::new(HttpClient::new(Default::default(), Proxies::none())),
            connd::retry::Until::Deadline,
            Arc::default(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (cache, creds) = (cache.clone(), credentials(&idp));
            tasks.spawn(async move { cache.get(creds, deadline).await.map(|t| t.access_token.expose().to_owned()) });
        }
        let mut tokens = std::collections::HashSet::new();
        while let Some(joined) = tasks.join_next().await {
            tokens.insert(joined.unwrap().expect("a token"));
        }
        assert_eq!(tokens.len(), 1, "every caller got the same token");
    });
    assert_eq!(idp.token_requests(), 1, "1,000 concurrent callers caused {} token calls", idp.token_requests());
}

/// Renewal is due at 75-85% of a 5 s lifetime; it must happen without any caller. The
/// wait has a generous deadline and no lower bound, so a slow machine only makes it longer.
#[test]
fn tokens_are_renewed_in_the_background() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 5);
    runtime().block_on(async {
        let cache = TokenCache::new(
            Arc::new(HttpClient::new(Default::default(), Proxies::none())),
            connd::retry::Until::Cancelled,
            Arc::default(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let first = cache.get(credentials(&idp), deadline).await.expect("first token");
        while idp.token_successes() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(idp.token_successes(), 2, "the token was not renewed in the background");
        let second = cache.get(credentials(&idp), deadline).await.expect("second token");
        assert_ne!(first.access_token.expose(), second.access_token.expose());
        assert!(second.expires_at > first.expires_at);
        cache.shutdown().await;
    });
}

/// Within its lifetime a token is served from the cache (a 60 s lifetime leaves no room
/// for a slow provider to matter); once it has expired, the next caller renews it.
#[test]
fn without_background_renewal_an_ageing_token_is_renewed_on_demand() {
    let idp = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 60);
    let short = OidcProvider::start(&[Client::basic("portal", SECRET, "read")], 2);
    runtime().block_on(async {
        let cache = TokenCache::new(
            Arc::new(HttpClient::new(Default::default(), Proxies::none())),
            connd::retry::Until::Deadline,
            Arc::default(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let first = cache.get(credentials(&idp), deadline).await.expect("first token");
        let again = cache.get(credentials(&idp), deadline).await.expect("cached token");
        assert_eq!(first.access_token.expose(), again.access_token.expose());
        assert_eq!(idp.token_requests(), 1);

        let first = cache.get(credentials(&short), deadline).await.expect("first token");
        tokio::time::sleep_until(first.expires_at).await;
        let renewed = cache.get(credentials(&short), deadline).await.expect("renewed token");
        assert_ne!(first.access_token.expose(), renewed.access_token.expose());
        assert_eq!(short.token_requests(), 2);
    });
}

//! What signing a client assertion costs a token request (docs/oauth.md): token requests
//! per second from the token cache against a local token endpoint (the fake control plane
//! on loopback over TLS, one connection per request as connd makes them), with
//! `basic` and with `private_key_jwt` (ES256, RS256 2048-bit), and the signing alone.
//! Run with `cargo bench --bench client_auth`; asked: signing adds <= 0.3 ms per request.

#[path = "../tests/support/control_plane.rs"]
mod control_plane;

use connd::http::client::HttpClient;
use connd::http::proxy::Proxies;
use connd::http::tls::TlsSettings;
use connd::http::url::check_url;
use connd::retry::Until;
use connd::secret::Secret;
use connd::source::client_auth::{assertion::Signer, private_key, Material};
use connd::source::oauth::{AppKey, Credentials, TokenCache};
use control_plane::{FakeControlPlane, Reply};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Token requests per method, after a warm-up of a tenth as many.
const REQUESTS: u32 = 400;
/// Signatures per algorithm, for the signing alone.
const SIGNATURES: u32 = 2000;

fn key(dir: &Path, name: &str, args: &[&str]) -> Secret {
    let path = dir.join(name);
    let out = Command::new("openssl").arg("genpkey").args(args).arg("-out").arg(&path).output().expect("openssl runs");
    assert!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
    Secret::new(std::fs::read_to_string(path).expect("the key"))
}

/// The mean time of one token request with `auth`: each round gets a token and drops it,
/// so that every round asks the endpoint.
fn per_request(runtime: &tokio::runtime::Runtime, cp: &FakeControlPlane, auth: &Material) -> Duration {
    let url = format!("{}/token", cp.url());
    let tls = TlsSettings { ca_file: Some(cp.ca_file().to_path_buf()), ..Default::default() };
    let cache = TokenCache::new(Arc::new(HttpClient::new(tls, Proxies::none())), Until::Never, Arc::default());
    let creds = || Credentials {
        key: AppKey::new(&url, "bench-client", &[]),
        url: check_url(&url, false).expect("a URL"),
        auth: auth.clone(),
    };
    runtime.block_on(async {
        let round = || async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let token = cache.get(creds(), deadline).await.expect("a token");
            assert!(cache.invalidate(&creds().key, &token.access_token));
        };
        for _ in 0..REQUESTS / 10 {
            round().await;
        }
        let started = Instant::now();
        for _ in 0..REQUESTS {
            round().await;
        }
        started.elapsed() / REQUESTS
    })
}

fn signing(signer: &Signer) -> Duration {
    let started = Instant::now();
    for _ in 0..SIGNATURES {
        std::hint::black_box(signer.sign("bench-client", "https://127.0.0.1/token").expect("a signature"));
    }
    started.elapsed() / SIGNATURES
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ec = key(dir.path(), "ec.pem", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let rsa = key(dir.path(), "rsa.pem", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let cp = FakeControlPlane::start(false);
    cp.script(
        "/token",
        vec![Reply::raw(200, r#"{"access_token":"bench-token","token_type":"Bearer","expires_in":3600}"#)],
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");

    let pkjwt =
        |key: &Secret| Material::PrivateKeyJwt { key_pem: key.clone(), key_id: None, alg: None, audience: None };
    let basic = per_request(&runtime, &cp, &Material::Basic { secret: Secret::new("bench-s3cret") });
    let es256 = per_request(&runtime, &cp, &pkjwt(&ec));
    let rs256 = per_request(&runtime, &cp, &pkjwt(&rsa));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("token requests against a local endpoint over TLS ({REQUESTS} each, one connection per request):");
    for (name, d) in [("basic", basic), ("private_key_jwt ES256", es256), ("private_key_jwt RS256", rs256)] {
        let added = ms(d) - ms(basic);
        println!(
            "  {name:<22} {:>7.0} requests/s  {:>6.3} ms/request  {added:+.3} ms vs basic",
            1.0 / d.as_secs_f64(),
            ms(d)
        );
    }

    println!("signing alone ({SIGNATURES} assertions each):");
    for (name, pem) in [("ES256", &ec), ("RS256", &rsa)] {
        let (key, alg) = private_key::signing_key(pem, None).expect("a signing key");
        let signer = Signer::new(key, alg, None, None).expect("a signer");
        println!("  {name}  {:.3} ms/assertion", ms(signing(&signer)));
    }
}

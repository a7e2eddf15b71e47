//! Client authentication without a long-lived secret, against the real OpenID provider
//! (oidc-provider), whose own check of each assertion and certificate is the oracle:
//! `private_key_jwt` (RSA, PS256, EC), `client_secret_jwt`, `tls_client_auth` over mTLS,
//! `federated` (the assertion file re-read per request), RFC 8693 token exchange,
//! resource indicators and audiences in the cache key, and the bad inputs.

use crate::support::control_plane::Pki;
use crate::support::oidc::{Client, OidcProvider};
use crate::support::*;
use connd::http::client::HttpClient;
use connd::http::proxy::Proxies;
use connd::http::url::check_url;
use connd::retry::Until;
use connd::source::client_auth::Material;
use connd::source::oauth::{AppKey, Credentials, TokenCache};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const IDS: [&str; 4] = [
    "19d2648b-d29c-4452-afdd-1b9311e81412",
    "0b9e5d3a-7c41-4e8f-b2d6-5a1f3c9e7d40",
    "5c0a1e2b-3d4f-4a5b-8c6d-7e8f9a0b1c2d",
    "7d1b2c3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e",
];

/// A private key made by openssl (`genpkey` ARGS), PEM (PKCS#8), in `dir`.
fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("openssl").arg("genpkey").args(args).arg("-out").arg(&path).output().expect("openssl runs");
    assert!(out.status.success(), "openssl genpkey {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    path
}

fn rsa_key(dir: &Path, name: &str, bits: u32) -> PathBuf {
    openssl_key(dir, name, &["-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}")])
}

fn ec_key(dir: &Path, name: &str) -> PathBuf {
    openssl_key(dir, name, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
}

/// An OAuth connection `name` with these `oauth` settings (a YAML flow map's inside) and
/// parameters (YAML lines, indented by two).
fn oauth_conn(i: usize, name: &str, oauth: &str, params: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {}\nname: {name}\nproject: hr-project\nvisibility: project\nsecurity: oauth2\n\
         oauth: {{ {oauth} }}\nparameters:\n{params}",
        IDS[i]
    )
}

/// The provider's records of `client`'s token requests.
fn seen_for(idp: &OidcProvider, client: &str) -> Vec<Value> {
    idp.seen().into_iter().filter(|r| r["client_id"] == client).collect()
}

/// The claims connd's assertion must carry (docs/oauth.md), checked on the provider's record.
fn assert_assertion(record: &Value, client: &str, aud: &str, alg: &str, kid: Option<&str>) {
    assert_eq!(record["status"], 200, "{record}");
    let (header, claims) = (&record["assertion"]["header"], &record["assertion"]["payload"]);
    assert_eq!(header["alg"], alg, "{record}");
    assert_eq!(header["kid"].as_str(), kid, "{record}");
    assert_eq!(claims["iss"], client);
    assert_eq!(claims["sub"], client);
    assert_eq!(claims["aud"], aud);
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(exp > iat && exp - iat <= 300, "exp at most 5 minutes ahead: {claims}");
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32, "{claims}");
}

#[test]
fn private_key_jwt_with_rsa_ps256_and_ec_keys_and_no_secret() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa, ec) = (rsa_key(keys.path(), "rsa.pem", 2048), ec_key(keys.path(), "ec.pem"));
    let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
    let idp = OidcProvider::start(
        &[
            Client::with_method("rsa-client", "", "private_key_jwt", "read")
                .field("key_pem", json!(pem(&rsa)))
                .field("kid", json!("k-rsa")),
            Client::with_method("ps-client", "", "private_key_jwt", "read")
                .field("key_pem", json!(pem(&rsa)))
                .field("token_endpoint_auth_signing_alg", json!("PS256")),
            Client::with_method("ec-client", "", "private_key_jwt", "read")
                .field("key_pem", json!(pem(&ec)))
                .field("kid", json!("k-ec")),
        ],
        300,
    );
    let url = idp.token_url();
    let param = |client: &str, key: &Path| {
        format!(
            "  TokenURL: {url}\n  ConsumerKey: {client}\n  ClientPrivateKey: {{ file: {}, secret: true }}\n",
            key.display()
        )
    };
    let conns = oauth_conn(
        0,
        "rsa-api",
        "scopes: [read], clientAuth: private_key_jwt, keyId: k-rsa",
        &param("rsa-client", &rsa),
    ) + &oauth_conn(
        1,
        "ps-api",
        "scopes: [read], clientAuth: private_key_jwt, signingAlg: PS256",
        &param("ps-client", &rsa),
    ) + &oauth_conn(
        2,
        "ec-api",
        "scopes: [read], clientAuth: private_key_jwt, keyId: k-ec",
        &param("ec-client", &ec),
    );
    let fx = Fixture::with(&component_with_tokens(&["rsa-api", "ps-api", "ec-api"]), &conns);

    let out = fx.run("env", &["--log-level", "trace"]);
    assert_eq!(out.code, 0, "{out:?}");
    for var in ["RSA_API_TOKEN", "PS_API_TOKEN", "EC_API_TOKEN"] {
        assert_eq!(token_in(&out.stdout, var).len(), 43, "{var}");
    }
    assert_assertion(&seen_for(&idp, "rsa-client")[0], "rsa-client", url, "RS256", Some("k-rsa"));
    assert_assertion(&seen_for(&idp, "ps-client")[0], "ps-client", url, "PS256", None);
    assert_assertion(&seen_for(&idp, "ec-client")[0], "ec-client", url, "ES256", Some("k-ec"));
    for record in idp.seen() {
        assert_eq!(record["method"], "private_key_jwt", "{record}");
    }
    // Nothing of a key or an assertion in a trace-level log.
    let key_line = pem(&rsa).lines().nth(1).unwrap().to_owned();
    assert!(
        !out.stderr.contains(&key_line) && !out.stderr.contains("eyJ"),
        "a key or an assertion leaked:\n{}",
        out.stderr
    );

    // A second run: fresh assertions, which the provider's replay check accepts.
    let again = fx.run("env", &[]);
    assert_eq!(again.code, 0, "{again:?}");
    let jtis: Vec<Value> =
        seen_for(&idp, "ec-client").iter().map(|r| r["assertion"]["payload"]["jti"].clone()).collect();
    assert_eq!(jtis.len(), 2);
    assert_ne!(jtis[0], jtis[1], "the jti was reused");
    assert_eq!(seen_for(&idp, "ec-client")[1]["status"], 200);

    // `check` names the grant and the method, never the key.
    let check = fx.run("check", &[]);
    assert_eq!(check.code, 0, "{check:?}");
    assert_contains(&check.stdout, &["oauth: grant client_credentials, clientAuth private_key_jwt"]);
    assert!(!check.stdout.contains(&key_line), "{}", check.stdout);
}

#[test]
fn client_secret_jwt_signs_with_the_secret() {
    let secret = "a-client-secret-of-at-least-thirty-two-bytes";
    let idp = OidcProvider::start(&[Client::with_method("hs-client", secret, "client_secret_jwt", "read")], 300);
    let params = format!("  TokenURL: {}\n  ConsumerKey: hs-client\n  ConsumerSecret: {secret}\n", idp.token_url());
    let fx = Fixture::with(
        &component_with_tokens(&["hs-api"]),
        &oauth_conn(0, "hs-api", "clientAuth: client_secret_jwt", &params),
    );
    let out = fx.run("env", &["--log-level", "trace"]);
    assert_eq!(out.code, 0, "{out:?}");
    let records = seen_for(&idp, "hs-client");
    assert_assertion(&records[0], "hs-client", idp.token_url(), "HS256", None);
    assert_eq!(records[0]["method"], "client_secret_jwt");
    assert!(!out.stderr.contains(secret) && !out.stderr.contains("eyJ"), "{}", out.stderr);
}

#[test]
fn tls_client_auth_presents_the_connection_s_certificate() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_files();
    let (cert, key) = pki.client_named("mtls-client");
    let clients = [
        Client::with_method("mtls-client", "", "tls_client_auth", "read")
            .field("tls_client_auth_subject_dn", json!("CN=mtls-client")),
        Client::with_method("other-client", "", "tls_client_auth", "read")
            .field("tls_client_auth_subject_dn", json!("CN=someone-else")),
    ];
    let idp = OidcProvider::start_with(&clients, 300, Some((&server_cert, &server_key, &pki.ca_file)));
    assert!(idp.token_url().starts_with("https://"), "{}", idp.token_url());
    let params = |client: &str| {
        format!(
            "  TokenURL: {}\n  ConsumerKey: {client}\n  ClientCertificate: {{ file: {} }}\n  ClientKey: {{ file: {}, secret: true }}\n",
            idp.token_url(),
            cert.display(),
            key.display()
        )
    };
    let fx = Fixture::with(
        &component_with_tokens(&["mtls-api"]),
        &oauth_conn(0, "mtls-api", "scopes: [read], clientAuth: tls_client_auth", &params("mtls-client")),
    );
    let ca = pki.ca_file.display().to_string();
    let out = fx.run("env", &["--ca-file", &ca]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(token_in(&out.stdout, "MTLS_API_TOKEN").len(), 43);
    let record = &seen_for(&idp, "mtls-client")[0];
    assert_eq!(record["method"], "tls_client_auth", "{record}");
    assert_eq!(record["status"], 200, "{record}");

    // The provider refuses a certificate whose subject is not the registered one: 77,
    // naming the method.
    let fx = Fixture::with(
        &component_with_tokens(&["mtls-api"]),
        &oauth_conn(0, "mtls-api", "scopes: [read], clientAuth: tls_client_auth", &params("other-client")),
    );
    let out = fx.run("env", &["--ca-file", &ca]);
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(&out.stderr, &["invalid_client", "tls_client_auth", "subject DN"]);
}

/// A cache of one-shot callers (each call retries until its deadline) trusting nothing special.
fn cache() -> TokenCache {
    TokenCache::new(Arc::new(HttpClient::new(Default::default(), Proxies::none())), Until::Deadline, Arc::default())
}

/// A JWT the workload's platform would issue for `client`: ES256 with `key` (PKCS#8 PEM).
fn workload_jwt(key: &Path, client: &str, aud: &str, jti: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(key).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": client, "sub": client, "aud": aud, "jti": jti, "iat": now, "exp": now + 600});
    let key = jsonwebtoken::EncodingKey::from_ec_der(der.secret_pkcs8_der());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key).unwrap()
}

#[test]
fn federated_reads_the_assertion_file_for_every_request_and_never_sends_it_empty() {
    let dir = tempfile::tempdir().unwrap();
    let key = ec_key(dir.path(), "issuer.pem");
    let idp = OidcProvider::start(
        &[Client::with_method("fed-client", "", "private_key_jwt", "read")
            .field("key_pem", json!(std::fs::read_to_string(&key).unwrap()))],
        300,
    );
    let file = dir.path().join("token");
    let url = idp.token_url().to_owned();
    let creds = || Credentials {
        key: AppKey::new(&url, "fed-client", &["read".to_owned()]),
        url: check_url(&url, false).unwrap(),
        auth: Material::Federated { assertion_file: file.clone() },
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let cache = cache();
        let soon = || tokio::time::Instant::now() + Duration::from_secs(20);
        std::fs::write(&file, workload_jwt(&key, "fed-client", &url, "first") + "\n").unwrap();
        let first = cache.get(creds(), soon()).await.expect("a token with the first assertion");

        // The kubelet rotates the file; the next request reads the new one.
        std::fs::write(&file, workload_jwt(&key, "fed-client", &url, "second")).unwrap();
        assert!(cache.invalidate(&creds().key, &first.access_token));
        cache.get(creds(), soon()).await.expect("a token with the second assertion");

        // An empty file (mid-rotation) fails as transient with that cause: nothing is sent.
        std::fs::write(&file, "").unwrap();
        let second = cache.get(creds(), soon()).await.unwrap();
        assert!(cache.invalidate(&creds().key, &second.access_token));
        let before = idp.token_requests();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        let err = cache.get(creds(), deadline).await.expect_err("an empty assertion file");
        assert!(connd::error::Classify::class(&err).is_transient(), "{err:?}");
        assert_contains(&err.to_string(), &["oauth.assertionFile", "empty"]);
        assert_eq!(idp.token_requests(), before, "an empty assertion was sent");
        std::fs::remove_file(&file).unwrap();
        let err = cache.get(creds(), tokio::time::Instant::now() + Duration::from_millis(300)).await.unwrap_err();
        assert_contains(&err.to_string(), &["oauth.assertionFile", "No such file"]);
        assert_eq!(idp.token_requests(), before, "a request went out without an assertion");
    });
    let jtis: Vec<Value> =
        seen_for(&idp, "fed-client").iter().map(|r| r["assertion"]["payload"]["jti"].clone()).collect();
    assert_eq!(jtis, [json!("first"), json!("second")], "the file was not re-read");
}

#[test]
fn token_exchange_audiences_and_resources_are_sent_and_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("sa-token");
    std::fs::write(&subject, "the-workload-s-projected-token\n").unwrap();
    let secret = "exchanger-s3cret";
    let idp =
        OidcProvider::start(&[Client::basic("exchanger", secret, "read").field("token_exchange", json!(true))], 300);
    let params = format!("  TokenURL: {}\n  ConsumerKey: exchanger\n  ConsumerSecret: {secret}\n", idp.token_url());
    let exchange = format!(
        "grant: token_exchange, subjectTokenFile: {}, audience: payments, resource: [\"https://a.example/\", \"https://b.example/\"], params: {{ requested_token_type: \"urn:ietf:params:oauth:token-type:access_token\" }}",
        subject.display()
    );
    let conns = oauth_conn(0, "exchanged", &exchange, &params)
        + &oauth_conn(1, "one-resource", "scopes: [read], resource: \"https://api.example/\"", &params)
        + &oauth_conn(2, "same-resource", "scopes: [read], resource: \"https://api.example/\"", &params)
        + &oauth_conn(3, "other-resource", "scopes: [read], resource: \"https://other.example/\"", &params);
    let names = ["exchanged", "one-resource", "same-resource", "other-resource"];
    let fx = Fixture::with(&component_with_tokens(&names), &conns);
    let out = fx.run("env", &["--log-level", "trace"]);
    assert_eq!(out.code, 0, "{out:?}");
    let seen = seen_for(&idp, "exchanger");
    // Three applications: the two connections with the same resource share one token.
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(token_in(&out.stdout, "ONE_RESOURCE_TOKEN"), token_in(&out.stdout, "SAME_RESOURCE_TOKEN"));
    assert_ne!(token_in(&out.stdout, "ONE_RESOURCE_TOKEN"), token_in(&out.stdout, "OTHER_RESOURCE_TOKEN"));

    let exchanged = seen.iter().find(|r| r["subject_token"].is_string()).expect("the exchange");
    assert_eq!(exchanged["status"], 200, "{exchanged}");
    assert_eq!(exchanged["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(exchanged["subject_token"], "the-workload-s-projected-token");
    assert_eq!(exchanged["subject_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(exchanged["audience"], json!(["payments"]));
    assert_eq!(exchanged["resource"], json!(["https://a.example/", "https://b.example/"]));
    // The provider issued resource-bound tokens whose audience is the resource asked for.
    let audiences: Vec<Value> = seen
        .iter()
        .filter(|r| r["grant_type"] == "client_credentials")
        .map(|r| r["access_token_claims"]["aud"].clone())
        .collect();
    assert_eq!(audiences.len(), 2);
    assert!(audiences.contains(&json!("https://api.example/")) && audiences.contains(&json!("https://other.example/")));
    assert!(!out.stderr.contains("the-workload-s-projected-token"), "the subject token leaked:\n{}", out.stderr);
}

/// A key the provider does not hold: `invalid_client`, 77, naming the method.
#[test]
fn a_refused_assertion_exits_77_naming_the_method() {
    let keys = tempfile::tempdir().unwrap();
    let (registered, other) = (ec_key(keys.path(), "a.pem"), ec_key(keys.path(), "b.pem"));
    let idp = OidcProvider::start(
        &[Client::with_method("ec-client", "", "private_key_jwt", "read")
            .field("key_pem", json!(std::fs::read_to_string(&registered).unwrap()))],
        300,
    );
    let params = format!(
        "  TokenURL: {}\n  ConsumerKey: ec-client\n  ClientPrivateKey: {{ file: {} }}\n",
        idp.token_url(),
        other.display()
    );
    let fx = Fixture::with(
        &component_with_tokens(&["ec-api"]),
        &oauth_conn(0, "ec-api", "clientAuth: private_key_jwt", &params),
    );
    let out = fx.run("env", &[]);
    assert_eq!(out.code, 77, "{out:?}");
    assert_contains(
        &out.stderr,
        &["\"ec-api\"", "refused client \"ec-client\": invalid_client", "private_key_jwt", "ClientPrivateKey"],
    );
}

/// Keys and settings connd cannot use: 78 before any token request, naming the
/// connection, the parameter and what was found.
#[test]
fn unusable_keys_and_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let small = rsa_key(dir.path(), "small.pem", 1024);
    let good = rsa_key(dir.path(), "good.pem", 2048);
    let encrypted = dir.path().join("encrypted.pem");
    let out = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:x", "-in"])
        .arg(&good)
        .arg("-out")
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let pki = Pki::new();
    let (cert, _) = pki.client_named("a");
    let (_, other_key) = pki.client_named("b");

    let url = "http://127.0.0.1:9/token";
    let key_param =
        |p: &Path| format!("  TokenURL: {url}\n  ConsumerKey: c\n  ClientPrivateKey: {{ file: {} }}\n", p.display());
    let cases: Vec<(String, Vec<&str>)> = vec![
        (oauth_conn(0, "k-api", "clientAuth: private_key_jwt", &key_param(&not_pem)), vec!["ClientPrivateKey", "not PEM"]),
        (oauth_conn(0, "k-api", "clientAuth: private_key_jwt", &key_param(&encrypted)), vec!["ClientPrivateKey", "encrypted"]),
        (oauth_conn(0, "k-api", "clientAuth: private_key_jwt", &key_param(&small)), vec!["ClientPrivateKey", "1024 bits", "2048"]),
        (
            oauth_conn(
                0,
                "k-api",
                "clientAuth: tls_client_auth",
                &format!(
                    "  TokenURL: {url}\n  ConsumerKey: c\n  ClientCertificate: {{ file: {} }}\n  ClientKey: {{ file: {} }}\n",
                    cert.display(),
                    other_key.display()
                ),
            ),
            vec!["ClientCertificate", "does not match ClientKey"],
        ),
    ];
    let key_text = std::fs::read_to_string(&good).unwrap();
    for (conns, needles) in cases {
        let fx = Fixture::with(&component_with_tokens(&["k-api"]), &conns);
        // `check` proves the keys as `env` uses them, before any request.
        for command in ["env", "check"] {
            let out = fx.run(command, &[]);
            assert_eq!(out.code, 78, "{command} {needles:?}: {out:?}");
            assert_contains(&out.stderr, &needles);
            assert_contains(&out.stderr, &["\"k-api\""]);
            assert!(!out.stderr.contains(key_text.lines().nth(1).unwrap()), "{}", out.stderr);
        }
    }

    let settings: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "clientAuth: private_key_jtw",
            "  ClientPrivateKey: x\n",
            vec!["private_key_jtw", "did you mean `private_key_jwt`"],
        ),
        ("clientAuth: private_key_jwt", "", vec!["lacks ClientPrivateKey"]),
        ("clientAuth: federated", "", vec!["federated needs oauth.assertionFile"]),
        ("grant: token_exchange", "  ConsumerSecret: s\n", vec!["token_exchange` needs oauth.subjectTokenFile"]),
    ];
    for (oauth, extra, needles) in settings {
        let params = format!("  TokenURL: {url}\n  ConsumerKey: c\n{extra}");
        let fx = Fixture::with(&component_with_tokens(&["k-api"]), &oauth_conn(0, "k-api", oauth, &params));
        let out = fx.run("check", &[]);
        assert_eq!(out.code, 78, "{oauth}: {out:?}");
        assert_contains(&out.stderr, &needles);
    }
}

#[test]
fn check_never_shows_a_private_key_not_marked_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key(dir.path(), "key.pem", 2048);
    let pki = Pki::new();
    let (cert, client_key) = pki.client_named("a");
    let conns = oauth_conn(
        0,
        "k-api",
        "clientAuth: private_key_jwt",
        &format!("  TokenURL: http://127.0.0.1:9/token\n  ConsumerKey: c\n  ClientPrivateKey: {{ file: {} }}\n", key.display()),
    ) + &oauth_conn(
        1,
        "m-api",
        "clientAuth: tls_client_auth",
        &format!(
            "  TokenURL: http://127.0.0.1:9/token\n  ConsumerKey: c\n  ClientCertificate: {{ file: {} }}\n  ClientKey: {{ file: {} }}\n",
            cert.display(),
            client_key.display()
        ),
    );
    let fx = Fixture::with(&component_with_tokens(&["k-api", "m-api"]), &conns);
    let secrets: Vec<String> = [&key, &client_key]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().nth(1).unwrap().to_owned())
        .collect();
    for args in [&[][..], &["--format", "json"][..]] {
        let out = fx.run("check", args);
        assert_eq!(out.code, 0, "{out:?}");
        for secret in &secrets {
            assert!(!out.stdout.contains(secret.as_str()), "check {args:?} shows a key:\n{}", out.stdout);
            assert!(!out.stderr.contains(secret.as_str()), "check {args:?} logs a key:\n{}", out.stderr);
        }
        assert_contains(&out.stdout, &["ClientPrivateKey", "ClientKey", "redacted"]);
    }
}

#[test]
fn a_misspelt_method_is_one_error_not_a_second_about_basic() {
    let dir = tempfile::tempdir().unwrap();
    let key = ec_key(dir.path(), "key.pem");
    let conns = oauth_conn(
        0,
        "k-api",
        "clientAuth: private_key_jtw",
        &format!(
            "  TokenURL: http://127.0.0.1:9/token\n  ConsumerKey: c\n  ClientPrivateKey: {{ file: {} }}\n",
            key.display()
        ),
    );
    let fx = Fixture::with(&component_with_tokens(&["k-api"]), &conns);
    let out = fx.run("check", &[]);
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(&out.stderr, &["\"private_key_jtw\" is not a method connd knows", "private_key_jwt", "(1 error)"]);
    assert!(!out.stderr.contains("lacks"), "a second error about a method never asked for:\n{}", out.stderr);
}

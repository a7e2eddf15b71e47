//! The `oauth` settings of a connection (docs/oauth.md): the grant, the client
//! authentication method and what each method reads, and the fields every token request
//! adds (`audience`, `resource`, `params`). Checked here, with the parameters each method
//! needs; the key material itself (PEM keys and certificates) is a parameter value, checked
//! where values are resolved (`source::client_auth`).
//!
//! Boundary: the names and shapes of the settings; no file is read here.

use super::diag::{Diagnostics, Origin};
use super::model;
use super::raw;
use super::suggest::did_you_mean;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How connd proves the client to the token endpoint (`oauth.clientAuth`). Each method is
/// a variant here and a module under `source::client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientAuth {
    /// `client_secret_basic`: id and secret in the Authorization header.
    #[default]
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Post,
    /// An HS256 assertion keyed with the client secret (RFC 7523 §2.2).
    ClientSecretJwt,
    /// An RS256/PS256/ES256 assertion signed with `ClientPrivateKey`.
    PrivateKeyJwt,
    /// The connection's `ClientCertificate`/`ClientKey` on the TLS handshake (RFC 8705 §2).
    TlsClientAuth,
    /// A JWT issued to the workload (`oauth.assertionFile`) as `client_assertion`.
    Federated,
}

impl ClientAuth {
    /// Every method, as written in `oauth.clientAuth`.
    pub const ALL: [ClientAuth; 6] = [
        ClientAuth::Basic,
        ClientAuth::Post,
        ClientAuth::ClientSecretJwt,
        ClientAuth::PrivateKeyJwt,
        ClientAuth::TlsClientAuth,
        ClientAuth::Federated,
    ];

    /// The name written in `oauth.clientAuth` (and shown by `check`).
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::Basic => "basic",
            ClientAuth::Post => "post",
            ClientAuth::ClientSecretJwt => "client_secret_jwt",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::TlsClientAuth => "tls_client_auth",
            ClientAuth::Federated => "federated",
        }
    }

    /// The parameters the method reads besides `TokenURL` and `ConsumerKey`.
    pub fn needs(self) -> &'static [&'static str] {
        match self {
            ClientAuth::Basic | ClientAuth::Post | ClientAuth::ClientSecretJwt => &["ConsumerSecret"],
            ClientAuth::PrivateKeyJwt => &["ClientPrivateKey"],
            ClientAuth::TlsClientAuth => &["ClientCertificate", "ClientKey"],
            ClientAuth::Federated => &[],
        }
    }
}

/// Which grant asks for the token (`oauth.grant`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Grant {
    /// RFC 6749 §4.4.
    #[default]
    ClientCredentials,
    /// RFC 8693: the workload's token (re-read from `subject_token_file` for each
    /// request) exchanged for one of the connection's.
    TokenExchange { subject_token_file: PathBuf, subject_token_type: String },
}

impl Grant {
    /// The name written in `oauth.grant` (and shown by `check`).
    pub fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::TokenExchange { .. } => "token_exchange",
        }
    }
}

/// RFC 8693 §3: the default `subject_token_type`.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The validated `oauth` settings.
#[derive(Debug, Clone, Default)]
pub struct OAuth {
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    pub grant: Grant,
    /// `kid` of the assertions connd signs (`private_key_jwt`).
    pub key_id: Option<String>,
    /// `RS256`, `PS256` or `ES256`; `None`: from the key (RS256 for RSA, ES256 for EC).
    pub signing_alg: Option<String>,
    /// `federated`: the workload's JWT, re-read for every token request.
    pub assertion_file: Option<PathBuf>,
    /// `aud` of the assertions connd signs; `None`: the token URL.
    pub assertion_audience: Option<String>,
    /// `audience` form fields (RFC 8693 §2.1), in order.
    pub audience: Vec<String>,
    /// `resource` form fields (RFC 8707), in order.
    pub resource: Vec<String>,
    /// Other form fields, sorted by name.
    pub params: BTreeMap<String, String>,
}

/// Form fields connd sets itself: `oauth.params` may not name them.
const OWN_FIELDS: [&str; 12] = [
    "grant_type",
    "scope",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "audience",
    "resource",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
];

/// Checks `raw` against the parameters of connection `name`, reporting each fault.
pub fn settings(
    name: &str,
    raw: raw::OAuth,
    parameters: &model::Parameters,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> OAuth {
    // A method connd does not know is reported once: its parameters are not checked
    // against a method the user never asked for.
    let known = client_auth(name, raw.client_auth.as_deref(), at, diags);
    let client_auth = known.unwrap_or(ClientAuth::Basic);
    if known.is_some() {
        missing_parameters(name, client_auth, parameters, at, diags);
    }
    let assertion_file = raw.assertion_file.map(PathBuf::from);
    assertion_file_fits(name, client_auth, assertion_file.as_deref(), at, diags);
    signing_fits(name, client_auth, raw.key_id.is_some(), raw.signing_alg.as_deref(), at, diags);
    let grant = grant(name, raw.grant.as_deref(), raw.subject_token_file, raw.subject_token_type, at, diags);
    for key in raw.params.keys().filter(|k| OWN_FIELDS.contains(&k.as_str())) {
        diags.error(
            at("params"),
            format!("connection {name:?}: oauth.params sets {key:?}, which connd sets itself"),
            "remove it from params (use scopes, audience, resource, grant or clientAuth)",
        );
    }
    OAuth {
        scopes: raw.scopes,
        client_auth,
        grant,
        key_id: raw.key_id,
        signing_alg: raw.signing_alg,
        assertion_file,
        assertion_audience: raw.assertion_audience,
        audience: raw.audience.0,
        resource: raw.resource.0,
        params: raw.params,
    }
}

/// `oauth.clientAuth` as a method (`basic` when absent); `None`, reported, when connd
/// knows no method of that name.
fn client_auth(
    name: &str,
    text: Option<&str>,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Option<ClientAuth> {
    let Some(text) = text else { return Some(ClientAuth::Basic) };
    let found = ClientAuth::ALL.into_iter().find(|m| m.name() == text);
    if found.is_none() {
        let names = ClientAuth::ALL.map(ClientAuth::name);
        diags.error(
            at("clientAuth"),
            format!(
                "connection {name:?}: oauth.clientAuth {text:?} is not a method connd knows{}",
                did_you_mean(text, names)
            ),
            format!("write one of {}", names.join(", ")),
        );
    }
    found
}

/// The parameters `client_auth` needs that the connection lacks, as one error.
fn missing_parameters(
    name: &str,
    client_auth: ClientAuth,
    parameters: &model::Parameters,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) {
    let missing: Vec<&str> = ["ConsumerKey"]
        .iter()
        .chain(client_auth.needs())
        .chain(&["TokenURL"])
        .copied()
        .filter(|k| !parameters.contains_key(k))
        .collect();
    if !missing.is_empty() {
        diags.error(
            at("security"),
            format!("OAuth connection {name:?} lacks {} (oauth.clientAuth {})", missing.join(", "), client_auth.name()),
            format!("add those parameters: {} needs {}", client_auth.name(), needs_text(client_auth)),
        );
    }
}

/// `oauth.assertionFile`: required by `federated` (an absolute path), read by no other method.
fn assertion_file_fits(
    name: &str,
    client_auth: ClientAuth,
    assertion_file: Option<&std::path::Path>,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) {
    match (client_auth, assertion_file) {
        (ClientAuth::Federated, None) => diags.error(
            at("clientAuth"),
            format!("connection {name:?}: oauth.clientAuth federated needs oauth.assertionFile"),
            "set oauth.assertionFile to the workload's token file (a projected ServiceAccount token, say)",
        ),
        (ClientAuth::Federated, Some(path)) if !path.is_absolute() => diags.error(
            at("assertionFile"),
            format!("connection {name:?}: oauth.assertionFile {:?} is not an absolute path", path.display()),
            "write the absolute path of the file",
        ),
        (ClientAuth::Federated, Some(_)) => {}
        (_, Some(_)) => diags.error(
            at("assertionFile"),
            format!("connection {name:?}: oauth.assertionFile is read only by oauth.clientAuth federated"),
            "set `clientAuth: federated`, or remove assertionFile",
        ),
        (_, None) => {}
    }
}

/// `oauth.keyId` and `oauth.signingAlg`: read only by `private_key_jwt`, whose algorithms
/// are RS256, PS256 and ES256.
fn signing_fits(
    name: &str,
    client_auth: ClientAuth,
    key_id: bool,
    signing_alg: Option<&str>,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) {
    let signs = matches!(client_auth, ClientAuth::PrivateKeyJwt);
    if key_id && !signs {
        diags.error(
            at("keyId"),
            format!("connection {name:?}: oauth.keyId is used only by private_key_jwt"),
            "remove keyId, or set `clientAuth: private_key_jwt`",
        );
    }
    match signing_alg {
        Some("RS256" | "PS256" | "ES256") if signs => {}
        Some(other) if signs => diags.error(
            at("signingAlg"),
            format!("connection {name:?}: oauth.signingAlg {other:?} is not RS256, PS256 or ES256"),
            "write RS256 or PS256 for an RSA key, ES256 for a P-256 key, or leave it out to take it from the key",
        ),
        Some(_) => diags.error(
            at("signingAlg"),
            format!("connection {name:?}: oauth.signingAlg is used only by private_key_jwt"),
            "remove signingAlg",
        ),
        None => {}
    }
}

fn needs_text(method: ClientAuth) -> String {
    let mut keys = vec!["TokenURL", "ConsumerKey"];
    keys.extend(method.needs());
    match method {
        ClientAuth::Federated => format!("{} and oauth.assertionFile", keys.join(", ")),
        ClientAuth::Basic
        | ClientAuth::Post
        | ClientAuth::ClientSecretJwt
        | ClientAuth::PrivateKeyJwt
        | ClientAuth::TlsClientAuth => keys.join(", "),
    }
}

/// `oauth.grant` and what `token_exchange` reads.
fn grant(
    name: &str,
    text: Option<&str>,
    subject_token_file: Option<String>,
    subject_token_type: Option<String>,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Grant {
    match text {
        None | Some("client_credentials") => {
            if subject_token_file.is_some() || subject_token_type.is_some() {
                diags.error(
                    at("subjectTokenFile"),
                    format!("connection {name:?}: oauth.subjectTokenFile is read only by `grant: token_exchange`"),
                    "set `grant: token_exchange`, or remove subjectTokenFile",
                );
            }
            Grant::ClientCredentials
        }
        Some("token_exchange") => match subject_token_file.map(PathBuf::from) {
            Some(path) if path.is_absolute() => Grant::TokenExchange {
                subject_token_file: path,
                subject_token_type: subject_token_type.unwrap_or_else(|| JWT_TOKEN_TYPE.to_owned()),
            },
            Some(path) => {
                diags.error(
                    at("subjectTokenFile"),
                    format!("connection {name:?}: oauth.subjectTokenFile {:?} is not an absolute path", path.display()),
                    "write the absolute path of the file",
                );
                Grant::ClientCredentials
            }
            None => {
                diags.error(
                    at("grant"),
                    format!("connection {name:?}: `grant: token_exchange` needs oauth.subjectTokenFile"),
                    "set oauth.subjectTokenFile to the file holding the token to exchange",
                );
                Grant::ClientCredentials
            }
        },
        Some(other) => {
            let names = ["client_credentials", "token_exchange"];
            diags.error(
                at("grant"),
                format!(
                    "connection {name:?}: oauth.grant {other:?} is not a grant connd knows{}",
                    did_you_mean(other, names)
                ),
                "write client_credentials (the default) or token_exchange",
            );
            Grant::ClientCredentials
        }
    }
}

//! Client authentication at the token endpoint (docs/oauth.md): how a token request proves
//! the client, one module per method family. A connection's [`Material`] is read from
//! its resolved parameters and settings (cheap, compared on every call so that a rotated
//! key or secret is used from the next request); [`prepare`] turns it into a [`Prepared`]
//! method (keys parsed and checked: a key that cannot be used is a config error), which
//! [`Prepared::apply`] puts on each request.
//!
//! - `secret`: `basic` and `post`, the client secret itself;
//! - `assertion`: the JWTs connd signs (`client_secret_jwt`, HS256; `private_key_jwt`),
//!   with `private_key` reading and checking the PEM key;
//! - `tls_client_auth`: the certificate on the TLS handshake (RFC 8705), a client of its own;
//! - `federated`: a JWT issued to the workload, re-read from its file for every request
//!   (also how `token_exchange` reads its subject token).
//!
//! Boundary: what goes on one request; `oauth` decides when to ask, and `credentials`
//! reads the parameters.

pub mod assertion;
pub mod federated;
pub mod private_key;
pub mod secret;
pub mod tls_client_auth;

use crate::config::model::ClientAuth;
use crate::error::{Class, Classify};
use crate::http::client::HttpClient;
use crate::secret::Secret;
use http::HeaderMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a method reads, as the connection gives it (PEM text, file paths, the secret).
/// Its Debug shows no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    Basic { secret: Secret },
    Post { secret: Secret },
    ClientSecretJwt { secret: Secret, audience: Option<String> },
    PrivateKeyJwt { key_pem: Secret, key_id: Option<String>, alg: Option<String>, audience: Option<String> },
    TlsClientAuth { cert_pem: Secret, key_pem: Secret },
    Federated { assertion_file: PathBuf },
}

impl Material {
    /// The method this material is for.
    pub fn method(&self) -> ClientAuth {
        match self {
            Material::Basic { .. } => ClientAuth::Basic,
            Material::Post { .. } => ClientAuth::Post,
            Material::ClientSecretJwt { .. } => ClientAuth::ClientSecretJwt,
            Material::PrivateKeyJwt { .. } => ClientAuth::PrivateKeyJwt,
            Material::TlsClientAuth { .. } => ClientAuth::TlsClientAuth,
            Material::Federated { .. } => ClientAuth::Federated,
        }
    }

    /// The client secret, when the method sends one (an endpoint's error text that quotes
    /// it is shown without it).
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Material::Basic { secret } | Material::Post { secret } | Material::ClientSecretJwt { secret, .. } => {
                Some(secret)
            }
            Material::PrivateKeyJwt { .. } | Material::TlsClientAuth { .. } | Material::Federated { .. } => None,
        }
    }
}

/// A token request's form fields, serialized at the end: a `form_urlencoded::Serializer`
/// cannot be held across an await. Values may be secrets; its Debug shows none.
#[derive(Default)]
pub struct Form(Vec<(String, Secret)>);

impl Form {
    pub fn append_pair(&mut self, name: &str, value: &str) {
        self.0.push((name.to_owned(), Secret::new(value)));
    }

    /// `application/x-www-form-urlencoded`.
    pub fn finish(self) -> Secret {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.0 {
            form.append_pair(name, value.expose());
        }
        Secret::new(form.finish())
    }
}

/// A method ready for requests.
pub enum Prepared {
    Basic(Secret),
    Post(Secret),
    /// `client_secret_jwt` and `private_key_jwt`: an assertion signed per request.
    Assertion(Box<assertion::Signer>),
    /// Requests go through this client, which presents the certificate.
    TlsClientAuth(Arc<HttpClient>),
    Federated(PathBuf),
}

/// Why a method cannot be used, or one request cannot be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientAuthError {
    /// A key or certificate that cannot be used: a config error (78).
    #[error("{parameter}: {cause}")]
    Key { parameter: &'static str, cause: String },
    /// A workload token file (`oauth.assertionFile`, `oauth.subjectTokenFile`) empty or
    /// unreadable at request time: transient, the kubelet may be rotating it.
    #[error("{what} {}: {cause}", path.display())]
    File { what: &'static str, path: PathBuf, cause: String },
}

impl Classify for ClientAuthError {
    fn class(&self) -> Class {
        match self {
            ClientAuthError::Key { .. } => Class::Config,
            ClientAuthError::File { .. } => Class::Unavailable,
        }
    }
}

/// Parses and checks `material`; `http` is the client the other methods use, whose trust
/// and proxy rules a `tls_client_auth` client shares.
pub fn prepare(material: &Material, http: &HttpClient) -> Result<Prepared, ClientAuthError> {
    match material {
        Material::Basic { secret } => Ok(Prepared::Basic(secret.clone())),
        Material::Post { secret } => Ok(Prepared::Post(secret.clone())),
        Material::ClientSecretJwt { secret, audience } => {
            Ok(Prepared::Assertion(Box::new(assertion::Signer::hs256(secret, audience.clone())?)))
        }
        Material::PrivateKeyJwt { key_pem, key_id, alg, audience } => {
            let (key, alg) = private_key::signing_key(key_pem, alg.as_deref())?;
            Ok(Prepared::Assertion(Box::new(assertion::Signer::new(key, alg, key_id.clone(), audience.clone())?)))
        }
        Material::TlsClientAuth { cert_pem, key_pem } => {
            Ok(Prepared::TlsClientAuth(Arc::new(tls_client_auth::client(http, cert_pem, key_pem)?)))
        }
        Material::Federated { assertion_file } => Ok(Prepared::Federated(assertion_file.clone())),
    }
}

/// Checks `material` as [`prepare`] does, reading no trust store and making no client:
/// `check`'s proof that the keys are usable.
pub fn check(material: &Material) -> Result<(), ClientAuthError> {
    match material {
        Material::Basic { .. } | Material::Post { .. } | Material::Federated { .. } => Ok(()),
        Material::ClientSecretJwt { secret, audience } => {
            assertion::Signer::hs256(secret, audience.clone()).map(|_| ())
        }
        Material::PrivateKeyJwt { key_pem, key_id, alg, audience } => {
            let (key, alg) = private_key::signing_key(key_pem, alg.as_deref())?;
            assertion::Signer::new(key, alg, key_id.clone(), audience.clone()).map(|_| ())
        }
        Material::TlsClientAuth { cert_pem, key_pem } => tls_client_auth::check(cert_pem, key_pem),
    }
}

impl Prepared {
    /// Puts the client authentication of `client_id` on one request to `token_url`.
    pub async fn apply(
        &self,
        client_id: &str,
        token_url: &str,
        form: &mut Form,
        headers: &mut HeaderMap,
    ) -> Result<(), ClientAuthError> {
        match self {
            Prepared::Basic(secret) => secret::basic(client_id, secret, headers),
            Prepared::Post(secret) => {
                secret::post(client_id, secret, form);
                Ok(())
            }
            Prepared::Assertion(signer) => {
                let jwt = signer.sign(client_id, token_url)?;
                assertion::put(client_id, &jwt, form);
                Ok(())
            }
            Prepared::TlsClientAuth(_) => {
                // RFC 8705 §2: the certificate proves the client; the id says which one.
                form.append_pair("client_id", client_id);
                Ok(())
            }
            Prepared::Federated(path) => {
                let jwt = federated::read(path, "oauth.assertionFile").await?;
                assertion::put(client_id, &jwt, form);
                Ok(())
            }
        }
    }

    /// The client requests go through, when the method needs one of its own.
    pub fn http(&self) -> Option<&Arc<HttpClient>> {
        match self {
            Prepared::TlsClientAuth(http) => Some(http),
            Prepared::Basic(_) | Prepared::Post(_) | Prepared::Assertion(_) | Prepared::Federated(_) => None,
        }
    }
}

/// What to check when the endpoint refuses the client, by method.
pub fn refusal_fix(method: ClientAuth) -> &'static str {
    match method {
        ClientAuth::Basic | ClientAuth::Post | ClientAuth::ClientSecretJwt => "check ConsumerKey and ConsumerSecret",
        ClientAuth::PrivateKeyJwt => {
            "check ConsumerKey, ClientPrivateKey and that the provider holds its public key (JWKS) and kid"
        }
        ClientAuth::TlsClientAuth => {
            "check ConsumerKey and that the provider registered the certificate's subject DN (or the certificate)"
        }
        ClientAuth::Federated => {
            "check ConsumerKey and the provider's federated credential (issuer, subject and audience of the assertion)"
        }
    }
}

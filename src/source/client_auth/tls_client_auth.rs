//! `tls_client_auth` (RFC 8705 §2): the connection's `ClientCertificate` and `ClientKey`
//! (PEM) presented on the token endpoint's TLS handshake, by a client of its own that
//! shares the trust (`--ca-file`) and proxy rules of the others. A key that does not
//! match the certificate is refused here, before any request.

use super::private_key::{self, check_rsa};
use super::ClientAuthError;
use crate::http::client::HttpClient;
use crate::http::tls::{client_config_presenting, TlsError};
use crate::secret::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client presenting `cert_pem` with `key_pem`, otherwise as `http`.
pub fn client(http: &HttpClient, cert_pem: &Secret, key_pem: &Secret) -> Result<HttpClient, ClientAuthError> {
    let (chain, key) = parts(cert_pem, key_pem)?;
    let settings = http.connector().tls_settings();
    let config = client_config_presenting(settings, chain, key).map_err(refusal)?;
    Ok(http.with_tls_config(config))
}

/// Checks `cert_pem` and `key_pem` as [`client`] does, without reading any trust (`check`).
pub fn check(cert_pem: &Secret, key_pem: &Secret) -> Result<(), ClientAuthError> {
    let (chain, key) = parts(cert_pem, key_pem)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_client_auth_cert(chain, key))
        .map(|_| ())
        .map_err(|e| refusal(TlsError::Rustls(e)))
}

/// The certificate chain and the key, read and checked.
fn parts(
    cert_pem: &Secret,
    key_pem: &Secret,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientAuthError> {
    let refuse = |cause: String| ClientAuthError::Key { parameter: "ClientCertificate", cause };
    let chain = CertificateDer::pem_slice_iter(cert_pem.expose().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse(format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(refuse("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
    }
    let key = private_key::parse("ClientKey", key_pem)?;
    if let PrivateKeyDer::Pkcs1(der) = &key {
        check_rsa("ClientKey", der.secret_pkcs1_der())?;
    }
    Ok((chain, key))
}

/// What a TLS setup error means for the two parameters.
fn refusal(e: TlsError) -> ClientAuthError {
    let refuse = |parameter, cause: String| ClientAuthError::Key { parameter, cause };
    match e {
        TlsError::Rustls(rustls::Error::InconsistentKeys(_)) => refuse(
            "ClientCertificate",
            "it does not match ClientKey: give the key the certificate was issued for".into(),
        ),
        TlsError::Rustls(other) => refuse("ClientKey", format!("not usable with ClientCertificate: {other}")),
        other => refuse("ClientCertificate", format!("the TLS setup failed: {other}")),
    }
}

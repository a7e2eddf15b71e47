//! The TLS client configuration for every outbound HTTPS call (control plane and token
//! endpoints): rustls with the `ring` provider, which builds from source with only a C
//! compiler (no cmake, no Go, unlike aws-lc). Trust is `--ca-file` when given (like
//! `curl --cacert`: explicit replaces the system's), else the system's roots; a client
//! certificate is offered for mTLS when `--client-cert`/`--client-key` are set.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the TLS material comes from.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot use {what} {}: {cause}", path.display())]
    File { what: &'static str, path: PathBuf, cause: String },
    #[error("no trusted CA certificates: the system has none and --ca-file is not set")]
    NoRoots,
    /// The cause is in the message, not a `#[source]`: `HttpError::Tls` shows this error's
    /// message alone.
    #[error("cannot set up TLS: {0}")]
    Rustls(rustls::Error),
    /// A PEM value given as a parameter (the proxy's per-connection mTLS).
    #[error("cannot use {what}: {cause}")]
    Pem { what: &'static str, cause: String },
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        TlsError::Rustls(e)
    }
}

fn file_err(what: &'static str, path: &Path, cause: impl ToString) -> TlsError {
    TlsError::File { what, path: path.to_path_buf(), cause: cause.to_string() }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(what, path, e))?;
    let certs =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"));
    }
    Ok(certs)
}

/// Whether `e` is webpki's refusal of an X.509 v1 certificate, which rustls wraps in
/// `CertificateError::Other`.
pub fn is_v1_certificate(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<webpki::Error>().is_some_and(|w| matches!(w, webpki::Error::UnsupportedCertVersion))
        }
        _ => false,
    }
}

/// Why a certificate from connd's own `flag` cannot be used, and the fix.
fn own_certificate_error(e: &rustls::Error, flag: &str) -> String {
    if is_v1_certificate(e) {
        return format!(
            "it is an X.509 v1 certificate (what `openssl x509 -req` makes without -extfile), which connd does not accept; \
             it is connd's own ({flag}), not the server's: reissue it as v3"
        );
    }
    match e {
        rustls::Error::InconsistentKeys(_) => {
            "it does not match the key in --client-key: give the key it was issued for".into()
        }
        other => other.to_string(),
    }
}

/// Builds the client configuration; reads every file now, so a bad path fails at startup.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = trusting(settings)?;
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("client certificate", cert)?;
            let pem = std::fs::read(key).map_err(|e| file_err("client key", key, e))?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_err("client key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| file_err("client certificate", cert, own_certificate_error(&e, "--client-cert")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The configuration of [`client_config`]'s trust that presents `chain` and `key`
/// instead of `--client-cert` (a connection's own certificate, docs/oauth.md); a key
/// that does not match the certificate is `rustls::Error::InconsistentKeys`.
pub fn client_config_presenting(
    settings: &TlsSettings,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsError> {
    Ok(Arc::new(trusting(settings)?.with_client_auth_cert(chain, key)?))
}

/// The ring provider, safe protocol versions and the trust `settings` name.
fn trusting(
    settings: &TlsSettings,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    trusting_roots(roots(settings)?)
}

/// The ring provider and safe protocol versions, trusting `roots`.
fn trusting_roots(
    roots: RootCertStore,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots))
}

/// The trust `settings` name: `--ca-file`, else the system's roots.
fn roots(settings: &TlsSettings) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            for cert in read_certs("CA file", path)? {
                roots.add(cert).map_err(|e| file_err("CA file", path, own_certificate_error(&e, "--ca-file")))?;
            }
        }
        None => {
            // Unreadable individual system certificates are skipped, as every TLS client does.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    Ok(roots)
}

/// PEM material given as values rather than files: the egress proxy's per-connection
/// upstream TLS (docs/proxy.md), from a connection's `CACertificate`, `ClientCertificate`
/// and `ClientKey` parameters.
pub struct PemTls<'a> {
    /// Trusted alone for this upstream when given; else `settings`' trust.
    pub ca: Option<&'a str>,
    /// The certificate chain and key presented to the upstream.
    pub client: Option<(&'a str, &'a str)>,
}

fn pem_certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, cause: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, cause: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into() });
    }
    Ok(certs)
}

/// Builds a client configuration from `pem`, with `settings` for what it does not give
/// (the trust when `pem.ca` is absent). Reads files only for that fallback.
pub fn client_config_pem(settings: &TlsSettings, pem: &PemTls<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = match pem.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in pem_certs("CACertificate", ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem { what: "CACertificate", cause: e.to_string() })?;
            }
            trusting_roots(roots)?
        }
        None => trusting(settings)?,
    };
    let config = match pem.client {
        Some((cert, key)) => {
            let chain = pem_certs("ClientCertificate", cert)?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| TlsError::Pem { what: "ClientKey", cause: e.to_string() })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::Pem {
                what: "ClientCertificate",
                cause: own_certificate_error(&e, "ClientCertificate"),
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

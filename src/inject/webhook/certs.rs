//! The webhook's server certificate, re-read when its files change (cert-manager renews
//! it and the kubelet swaps the mounted Secret's files). Every TLS handshake asks
//! [`CertFiles`] for the key; it compares the two files' identity (device, inode, size,
//! mtime: two `stat`s) with the loaded pair's and loads the new pair when they differ.
//! Connections already open keep the certificate they were made with, so no request in
//! flight is dropped. A new pair that does not load (a key not yet written, a mismatch)
//! leaves the last good pair in use, with a warning; the next handshake tries again.
//!
//! Boundary: certificate files to a rustls `CertifiedKey`; the listener is `server`'s.

use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate or key cannot be used at startup. Exit 78.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {what} {}: {cause} (fix: give a PEM {what} with --tls-cert/--tls-key, the key the certificate was issued for)", path.display())]
pub struct CertError {
    what: &'static str,
    path: PathBuf,
    cause: String,
}

impl CertError {
    pub(super) fn setup(path: &Path, e: rustls::Error) -> CertError {
        CertError { what: "certificate", path: path.to_path_buf(), cause: e.to_string() }
    }
}

impl crate::error::Classify for CertError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::Config
    }
}

/// What identifies one version of a file: device, inode, size, mtime (ns).
type Stamp = Option<(u64, u64, u64, i64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: [Stamp; 2],
    /// The stamps of a pair that failed to load, so that it is warned about once.
    failed: Option<[Stamp; 2]>,
}

/// `--tls-cert` and `--tls-key`, and the pair last loaded from them.
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
    /// Counts re-reads by result: a rotation that keeps failing shows before the old
    /// certificate expires.
    metrics: Arc<super::metrics::Metrics>,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFiles").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl CertFiles {
    /// Loads the pair now: a bad one fails at startup.
    pub fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Result<CertFiles, CertError> {
        let stamps = [stamp(cert), stamp(key)];
        let pair = load_pair(cert, key, &provider)?;
        Ok(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            loaded: Mutex::new(Loaded { key: Arc::new(pair), stamps, failed: None }),
            metrics,
        })
    }

    /// The current pair, re-read first if either file changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamps = [stamp(&self.cert), stamp(&self.key)];
        let mut loaded = self.loaded.lock();
        if stamps != loaded.stamps && loaded.failed != Some(stamps) {
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    loaded.key = Arc::new(pair);
                    loaded.stamps = stamps;
                    loaded.failed = None;
                    self.metrics.certificate_reload(true);
                    tracing::info!(cert = %self.cert.display(), "TLS certificate re-read");
                }
                Err(e) => {
                    loaded.failed = Some(stamps);
                    self.metrics.certificate_reload(false);
                    tracing::warn!(error = %e, "the changed TLS certificate cannot be used; the previous one stays");
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    let err = |what, path: &Path, cause: String| CertError { what, path: path.to_path_buf(), cause };
    let pem = std::fs::read(cert).map_err(|e| err("certificate", cert, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err("certificate", cert, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
    }
    let pem = std::fs::read(key).map_err(|e| err("key", key, e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err("key", key, e.to_string()))?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| err("key", key, e.to_string()))
}

//! Every TLS failure in words (docs/control-plane.md): the true cause, the fix, and the file when the
//! certificate came from connd's own flags. rustls and webpki say `UnknownIssuer` or
//! `Other(OtherError(UnsupportedCertVersion))`; a user needs "pass --ca-file" or
//! "reissue it as v3", and to know whether the certificate at fault is the server's or
//! connd's own. A TLS fault is permanent: the same handshake fails the same way again.

use crate::http::tls::{is_v1_certificate, TlsSettings};
use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError};
use std::time::{Duration, SystemTime};

/// One TLS failure, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFault {
    /// The cause and the fix, in a sentence that starts in lower case.
    pub message: String,
    /// The fault is in connd's own settings (its client certificate, a missing
    /// `--client-cert`): a config error, as opposed to the server's certificate.
    pub own_settings: bool,
}

impl std::fmt::Display for TlsFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The first `rustls::Error` in `err`'s chain, looking inside `io::Error`s (whose own
/// `source()` skips the error they wrap): handshakes and reads report rustls errors so.
pub fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(found) = inner.downcast_ref::<rustls::Error>() {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

/// What `e`, met while talking to `host` with `settings`, means and how to fix it.
pub fn explain(e: &rustls::Error, host: &str, settings: &TlsSettings) -> TlsFault {
    let server = |message: String| TlsFault { message, own_settings: false };
    let own = |message: String| TlsFault { message, own_settings: true };
    if is_v1_certificate(e) {
        return server(format!(
            "the server's certificate for {host} is an X.509 v1 certificate, which connd does not accept: reissue it as v3 with a subjectAltName for {host} (openssl x509 -req needs -extfile with subjectAltName=...)"
        ));
    }
    match e {
        rustls::Error::InvalidCertificate(c) => server(certificate(c, host, settings)),
        rustls::Error::AlertReceived(alert) => match (&settings.client_cert, alert) {
            (None, AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure) => own(format!(
                "the server {host} requires a client certificate (mTLS) and connd has none: pass --client-cert and --client-key"
            )),
            (
                Some(cert),
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError,
            ) => own(format!(
                "the server {host} refused connd's own client certificate {} (--client-cert) with the alert {alert:?}: check that a CA the server trusts signed it and that it is valid today",
                cert.display()
            )),
            _ => server(format!("the server {host} ended the TLS handshake with the alert {alert:?}")),
        },
        rustls::Error::PeerIncompatible(why) => {
            server(format!("the server {host} and connd have no TLS version or cipher suite in common ({why:?})"))
        }
        rustls::Error::NoCertificatesPresented => server(format!("the server {host} sent no certificate")),
        other => server(format!("the TLS handshake with {host} failed: {other}")),
    }
}

fn certificate(c: &CertificateError, host: &str, settings: &TlsSettings) -> String {
    let not_trusted = "the server's certificate is not trusted";
    match c {
        CertificateError::UnknownIssuer => match &settings.ca_file {
            Some(ca) => format!(
                "{not_trusted} (UnknownIssuer): no CA in --ca-file {} signed it: pass --ca-file with the CA that signed the server's certificate",
                ca.display()
            ),
            None => format!(
                "{not_trusted} (UnknownIssuer): no CA the system trusts signed it: pass --ca-file with the CA that signed it"
            ),
        },
        CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => format!(
            "the server's certificate has no subjectAltName, and its CN is not used to check the name {host:?} (RFC 6125): reissue it with a subjectAltName for {host}"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the server's certificate is not valid for {host:?}: it names only {}: use one of those in the URL, or reissue it with {host} in its subjectAltName",
            presented.iter().map(|n| format!("{:?}", bare_name(n))).collect::<Vec<_>>().join(", ")
        ),
        CertificateError::NotValidForName => {
            format!("the server's certificate is not valid for {host:?}: reissue it with {host} in its subjectAltName")
        }
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired on {} (it is now {}): renew it on the server",
            date(*not_after),
            date(*time)
        ),
        CertificateError::Expired => "the server's certificate has expired: renew it on the server".into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is not valid before {} (it is now {}): check the clocks of this host and of the CA",
            date(*not_before),
            date(*time)
        ),
        CertificateError::NotValidYet => {
            "the server's certificate is not valid yet: check the clocks of this host and of the CA".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not for TLS servers (its extended key usage lacks serverAuth): reissue it with serverAuth".into()
        }
        CertificateError::Revoked => "the server's certificate has been revoked: the server needs a new one".into(),
        CertificateError::BadSignature => format!("{not_trusted}: its signature does not verify (BadSignature)"),
        other => format!("{not_trusted} ({other:?})"),
    }
}

/// A presented name as the certificate holds it: webpki gives `DnsName("a.example")` and
/// `IpAddress(10.0.0.1)`.
fn bare_name(presented: &str) -> &str {
    let inner = |prefix: &str, suffix: &str| presented.strip_prefix(prefix).and_then(|s| s.strip_suffix(suffix));
    inner("DnsName(\"", "\")").or_else(|| inner("IpAddress(", ")")).unwrap_or(presented)
}

/// An instant as `Tue, 15 Nov 1994 08:12:31 GMT` (RFC 9110's date format).
fn date(t: UnixTime) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn an_expired_certificate_gives_its_date() {
        let e = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_600_000_000)),
        });
        let fault = explain(&e, "cp.example", &TlsSettings::default());
        assert!(fault.message.contains("expired on Sun, 13 Sep 2020 12:26:40 GMT"), "{fault}");
        assert!(!fault.own_settings);
    }

    #[test]
    fn a_missing_client_certificate_is_connds_to_fix() {
        let e = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let fault = explain(&e, "cp.example", &TlsSettings::default());
        assert!(fault.own_settings && fault.message.contains("pass --client-cert and --client-key"), "{fault}");
        let given = TlsSettings { client_cert: Some(PathBuf::from("/etc/connd/client.pem")), ..Default::default() };
        let fault = explain(&e, "cp.example", &given);
        assert!(fault.message.contains("connd's own client certificate /etc/connd/client.pem"), "{fault}");
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::NoCertificatesPresented);
        assert_eq!(find_rustls(&io), Some(&rustls::Error::NoCertificatesPresented));
        assert_eq!(find_rustls(&std::io::Error::other("x")), None);
    }
}

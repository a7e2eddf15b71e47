//! A PEM private key for signing assertions (`ClientPrivateKey`) and for the TLS handshake
//! (`ClientKey`): read with `rustls-pki-types`, its kind found with `pkcs8`/`pkcs1`, and
//! checked: PEM, not encrypted, RSA of 2048 bits or more, EC on P-256 (ES256). Each refusal
//! says what was found and how to fix it.

use super::assertion::Key;
use super::ClientAuthError;
use crate::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey};
use pkcs8::ObjectIdentifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// The smallest RSA modulus accepted, in bits (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// The key in `pem`, as `parameter` holds it, in DER; refused when it is not PEM or is
/// encrypted.
pub fn parse(parameter: &'static str, pem: &Secret) -> Result<PrivateKeyDer<'static>, ClientAuthError> {
    let refuse = |cause: String| ClientAuthError::Key { parameter, cause };
    let text = pem.expose();
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(refuse(
            "an encrypted PEM key, whose passphrase connd cannot ask for; \
             give it decrypted (`openssl pkey -in key.pem -out plain.pem`) from a Secret"
                .into(),
        ));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|_| refuse(format!("{}; give a PEM private key (-----BEGIN PRIVATE KEY-----)", found(text))))
}

/// What `text` holds, in words that show no key material.
fn found(text: &str) -> String {
    let label =
        text.lines().find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----").map(str::to_owned));
    match label {
        Some(label) => format!("it holds a PEM {label}, not a private key"),
        None if text.trim().is_empty() => "it is empty".into(),
        None => format!("it is not PEM ({} bytes with no -----BEGIN line)", text.len()),
    }
}

/// The signing key in `pem` (`ClientPrivateKey`) and its algorithm: `alg` when given and
/// fitting the key, else RS256 for RSA and ES256 for P-256.
pub fn signing_key(pem: &Secret, alg: Option<&str>) -> Result<(Key, Algorithm), ClientAuthError> {
    const PARAMETER: &str = "ClientPrivateKey";
    let refuse = |cause: String| ClientAuthError::Key { parameter: PARAMETER, cause };
    match parse(PARAMETER, pem)? {
        PrivateKeyDer::Pkcs1(der) => {
            let alg = rsa_alg(alg).map_err(refuse)?;
            Ok((rsa_key(der.secret_pkcs1_der())?, alg))
        }
        PrivateKeyDer::Pkcs8(der) => {
            let info = pkcs8::PrivateKeyInfo::try_from(der.secret_pkcs8_der())
                .map_err(|e| refuse(format!("a PKCS#8 key that cannot be read: {e}")))?;
            if info.algorithm.oid == RSA {
                let alg = rsa_alg(alg).map_err(refuse)?;
                return Ok((rsa_key(info.private_key)?, alg));
            }
            if info.algorithm.oid == EC {
                if info.algorithm.parameters_oid().ok() != Some(P256) {
                    return Err(refuse("an EC key on a curve other than P-256; ES256 needs P-256 (prime256v1)".into()));
                }
                return match alg {
                    None | Some("ES256") => {
                        Ok((Key::Jwt(EncodingKey::from_ec_der(der.secret_pkcs8_der())), Algorithm::ES256))
                    }
                    Some(other) => Err(refuse(format!("an EC P-256 key, which signs ES256, not {other}"))),
                };
            }
            Err(refuse(format!(
                "a key of algorithm {}, which connd does not sign with; give an RSA (RS256, PS256) or EC P-256 (ES256) key",
                info.algorithm.oid
            )))
        }
        PrivateKeyDer::Sec1(_) => Err(refuse(
            "an EC key in SEC1 form (BEGIN EC PRIVATE KEY); give it as PKCS#8: \
             `openssl pkcs8 -topk8 -nocrypt -in key.pem -out pkcs8.pem`"
                .into(),
        )),
        _ => Err(refuse("a kind of private key connd does not know".into())),
    }
}

/// An RSA signing key (PKCS#1 DER) of at least [`MIN_RSA_BITS`], parsed by `ring`.
fn rsa_key(pkcs1: &[u8]) -> Result<Key, ClientAuthError> {
    check_rsa("ClientPrivateKey", pkcs1)?;
    ring::signature::RsaKeyPair::from_der(pkcs1).map(|pair| Key::Rsa(Box::new(pair))).map_err(|e| {
        ClientAuthError::Key { parameter: "ClientPrivateKey", cause: format!("an RSA key that cannot sign: {e}") }
    })
}

/// RS256 unless PS256 is asked for.
fn rsa_alg(alg: Option<&str>) -> Result<Algorithm, String> {
    match alg {
        None | Some("RS256") => Ok(Algorithm::RS256),
        Some("PS256") => Ok(Algorithm::PS256),
        Some(other) => Err(format!("an RSA key, which signs RS256 or PS256, not {other}")),
    }
}

/// Refuses an RSA key (PKCS#1 DER) under [`MIN_RSA_BITS`].
pub fn check_rsa(parameter: &'static str, pkcs1: &[u8]) -> Result<(), ClientAuthError> {
    let key = pkcs1::RsaPrivateKey::try_from(pkcs1)
        .map_err(|e| ClientAuthError::Key { parameter, cause: format!("an RSA key that cannot be read: {e}") })?;
    let bytes = key.modulus.as_bytes();
    let bits = bytes.len() * 8 - bytes.first().map_or(8, |b| b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(ClientAuthError::Key {
            parameter,
            cause: format!("an RSA key of {bits} bits, under the {MIN_RSA_BITS} connd accepts; make a new one (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(pem: &str) -> String {
        match signing_key(&Secret::new(pem), None) {
            Ok(_) => panic!("accepted: {pem}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn what_is_not_a_usable_key_is_said_without_showing_it() {
        assert!(refusal("").contains("it is empty"));
        assert!(refusal("hunter2 is no key").contains("it is not PEM (17 bytes"));
        assert!(!refusal("hunter2 is no key").contains("hunter2"));
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(refusal(cert).contains("a PEM CERTIFICATE, not a private key"), "{}", refusal(cert));
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n";
        assert!(refusal(sec1).contains("openssl pkcs8 -topk8"), "{}", refusal(sec1));
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(refusal(encrypted).contains("encrypted PEM"), "{}", refusal(encrypted));
    }

    #[test]
    fn the_algorithm_follows_the_key() {
        let p256 = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let (_, alg) = signing_key(&Secret::new(&p256), None).unwrap();
        assert_eq!(alg, Algorithm::ES256);
        assert!(signing_key(&Secret::new(&p256), Some("RS256")).is_err());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap().serialize_pem();
        assert!(refusal(&p384).contains("other than P-256"), "{}", refusal(&p384));
    }
}

//! The client assertions connd signs (RFC 7523 §2.2, OIDC Core §9): `iss` = `sub` = the
//! client ID, `aud` = the token URL (or `oauth.assertionAudience`), a fresh `jti`, `iat`,
//! and `exp` [`LIFETIME`] ahead. Signed by `jsonwebtoken` on `ring`, the crypto rustls
//! already brings; an RSA key is kept parsed as `ring`'s key pair instead, because
//! jsonwebtoken 9 parses and checks an RSA key again for every signature (about 1.5 ms of
//! the 2 ms an RS256 assertion would cost), and the JWS is then assembled here
//! (RFC 7515 §7.1: two base64url JSON parts and ring's signature).

use super::ClientAuthError;
use crate::secret::Secret;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::RsaKeyPair;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an assertion is valid: one request's worth, within the 5 minutes providers allow.
pub const LIFETIME: Duration = Duration::from_secs(120);

/// RFC 7523 §2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A key assertions are signed with.
pub enum Key {
    /// HS256 (the client secret) and ES256: signed by jsonwebtoken.
    Jwt(EncodingKey),
    /// RS256 and PS256: ring's key pair, parsed once.
    Rsa(Box<RsaKeyPair>),
}

/// A signing key and the header of its assertions. Its Debug shows no key.
pub struct Signer {
    key: Key,
    header: Header,
    /// `aud` when not the token URL.
    audience: Option<String>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

impl Signer {
    /// An HS256 signer keyed with the client secret (`client_secret_jwt`).
    pub fn hs256(secret: &Secret, audience: Option<String>) -> Result<Signer, ClientAuthError> {
        if secret.expose().is_empty() {
            let cause = "empty: client_secret_jwt signs with the client secret".to_owned();
            return Err(ClientAuthError::Key { parameter: "ConsumerSecret", cause });
        }
        Signer::new(Key::Jwt(EncodingKey::from_secret(secret.expose().as_bytes())), Algorithm::HS256, None, audience)
    }

    /// A signer with `key` for `alg`, its assertions carrying `kid` when given; signs once
    /// now, so that a key `ring` refuses is a config error before any request.
    pub fn new(
        key: Key,
        alg: Algorithm,
        kid: Option<String>,
        audience: Option<String>,
    ) -> Result<Signer, ClientAuthError> {
        let mut header = Header::new(alg);
        header.kid = kid;
        let signer = Signer { key, header, audience };
        signer.sign("connd-probe", "https://connd.invalid/token").map(|_| signer)
    }

    /// A fresh assertion for `client_id` at `token_url`.
    pub fn sign(&self, client_id: &str, token_url: &str) -> Result<Secret, ClientAuthError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: self.audience.as_deref().unwrap_or(token_url),
            jti: jti(),
            iat: now,
            exp: now + LIFETIME.as_secs(),
        };
        let refuse = |e: String| ClientAuthError::Key {
            parameter: if self.header.alg == Algorithm::HS256 { "ConsumerSecret" } else { "ClientPrivateKey" },
            cause: format!("cannot sign an assertion with it: {e}"),
        };
        match &self.key {
            Key::Jwt(key) => {
                jsonwebtoken::encode(&self.header, &claims, key).map(Secret::new).map_err(|e| refuse(e.to_string()))
            }
            Key::Rsa(pair) => {
                let padding: &'static dyn ring::signature::RsaEncoding = match self.header.alg {
                    Algorithm::PS256 => &ring::signature::RSA_PSS_SHA256,
                    _ => &ring::signature::RSA_PKCS1_SHA256,
                };
                let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                let header = serde_json::to_vec(&self.header).map_err(|e| refuse(e.to_string()))?;
                let claims = serde_json::to_vec(&claims).map_err(|e| refuse(e.to_string()))?;
                let message = format!("{}.{}", b64(&header), b64(&claims));
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &ring::rand::SystemRandom::new(), message.as_bytes(), &mut signature)
                    .map_err(|_| refuse("the RSA signature failed".into()))?;
                Ok(Secret::new(format!("{message}.{}", b64(&signature))))
            }
        }
    }

    /// The algorithm the assertions are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.header.alg
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("alg", &self.header.alg).field("kid", &self.header.kid).finish()
    }
}

/// 128 bits from the system's random source, hex: unique and unguessable per assertion,
/// so a provider's replay check passes.
fn jti() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The system source failing is not expected; a weaker random is still unique.
        bytes = (u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..))).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `client_id`, `client_assertion_type` and `client_assertion` in the form body.
pub fn put(client_id: &str, jwt: &Secret, form: &mut super::Form) {
    form.append_pair("client_id", client_id);
    form.append_pair("client_assertion_type", ASSERTION_TYPE);
    form.append_pair("client_assertion", jwt.expose());
}

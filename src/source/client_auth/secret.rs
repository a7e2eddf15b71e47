//! `basic` and `post`: the client secret itself (RFC 6749 §2.3.1).

use super::ClientAuthError;
use crate::secret::Secret;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};

/// `Authorization: Basic` with each part form-urlencoded before base64 (RFC 6749 §2.3.1).
pub fn basic(client_id: &str, secret: &Secret, headers: &mut HeaderMap) -> Result<(), ClientAuthError> {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = Secret::new(format!("{}:{}", encode(client_id), encode(secret.expose())));
    let basic = Secret::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.expose())));
    // Base64 and ASCII only: always a valid header value.
    let mut value = HeaderValue::from_str(basic.expose())
        .map_err(|_| ClientAuthError::Key { parameter: "ConsumerSecret", cause: "not a valid header value".into() })?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// `client_id` and `client_secret` in the form body.
pub fn post(client_id: &str, secret: &Secret, form: &mut super::Form) {
    form.append_pair("client_id", client_id);
    form.append_pair("client_secret", secret.expose());
}

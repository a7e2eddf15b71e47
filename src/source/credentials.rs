//! The client credentials of an OAuth connection (docs/oauth.md): `TokenURL`, `ConsumerKey`
//! and `ConsumerSecret` from its literal values, its `file:` values or the control
//! plane's answer, with the token URL checked against the plain-http rule.
//!
//! Boundary: reading and checking only; `remote` decides when, `oauth` uses them.

use crate::config::model::Source;
use crate::http::url::check_url;
use crate::resolve::PlannedConnection;
use crate::secret::Secret;
use crate::source::oauth::{AppKey, Credentials};
use crate::source::SetupError;
use std::collections::HashMap;

/// The parameters an OAuth client needs.
pub const CLIENT_KEYS: [&str; 3] = ["TokenURL", "ConsumerKey", "ConsumerSecret"];

/// The client credentials of `p`; reads `file:` values (blocking).
pub fn read(
    p: &PlannedConnection,
    remote: Option<&HashMap<String, Secret>>,
    allow_insecure_http: bool,
) -> Result<Credentials, SetupError> {
    let value = |key: &'static str| -> Result<Secret, SetupError> {
        let missing = || SetupError::Credential { connection: p.name.clone(), key };
        match &p.connection.parameters.get(key).ok_or_else(missing)?.source {
            Source::Value(v) => Ok(v.clone()),
            Source::File(path) => crate::source::values::read_value_file(path).map(Secret::new).map_err(|cause| {
                SetupError::CredentialFile { connection: p.name.clone(), key, path: path.clone(), cause }
            }),
            Source::Remote => remote.and_then(|r| r.get(key)).cloned().ok_or_else(missing),
        }
    };
    let token_url = value("TokenURL")?;
    let client_id = value("ConsumerKey")?;
    let secret = value("ConsumerSecret")?;
    let url = check_url(token_url.expose(), allow_insecure_http).map_err(|source| SetupError::TokenUrl {
        connection: p.name.clone(),
        key: "TokenURL",
        source,
    })?;
    let oauth = p.connection.oauth.as_ref();
    let scopes = oauth.map(|o| o.scopes.clone()).unwrap_or_default();
    Ok(Credentials {
        key: AppKey::new(token_url.expose(), client_id.expose(), &scopes)
            .secret_client_id(p.connection.parameters.get("ConsumerKey").is_some_and(|k| k.secret)),
        url,
        secret,
        auth: oauth.map(|o| o.client_auth).unwrap_or_default(),
    })
}

/// [`read`], with `file:` values read on the blocking pool.
pub async fn read_async(
    p: &PlannedConnection,
    remote: Option<&HashMap<String, Secret>>,
    allow_insecure_http: bool,
) -> Result<Credentials, SetupError> {
    let from_file = CLIENT_KEYS
        .iter()
        .any(|k| p.connection.parameters.get(*k).is_some_and(|v| matches!(v.source, Source::File(_))));
    if !from_file {
        return read(p, remote, allow_insecure_http);
    }
    let (owned, remote) = (p.clone(), remote.cloned());
    let read = tokio::task::spawn_blocking(move || read(&owned, remote.as_ref(), allow_insecure_http)).await;
    read.unwrap_or_else(|_| Err(SetupError::Credential { connection: p.name.clone(), key: "ConsumerSecret" }))
}

//! Tokens issued to the workload and kept in a file the kubelet rotates (a projected
//! ServiceAccount token, a SPIFFE JWT-SVID): `federated`'s `oauth.assertionFile` and
//! `token_exchange`'s `oauth.subjectTokenFile`. Read for every request, never cached, and
//! never sent empty: an empty or unreadable file fails the request as transient.

use super::ClientAuthError;
use crate::secret::Secret;
use std::path::Path;

/// The token in `path` (`what` names the setting), surrounding whitespace trimmed.
pub async fn read(path: &Path, what: &'static str) -> Result<Secret, ClientAuthError> {
    let fail = |cause: String| ClientAuthError::File { what, path: path.to_path_buf(), cause };
    let text = Secret::new(tokio::fs::read_to_string(path).await.map_err(|e| fail(e.to_string()))?);
    let token = text.expose().trim();
    if token.is_empty() {
        return Err(fail("the file is empty (being rotated?); it is read again at the next attempt".into()));
    }
    Ok(Secret::new(token))
}

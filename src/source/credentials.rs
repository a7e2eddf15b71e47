//! The client credentials of an OAuth connection (docs/oauth.md): `TokenURL`,
//! `ConsumerKey` and what its client authentication method reads (`ConsumerSecret`,
//! `ClientPrivateKey`, `ClientCertificate`/`ClientKey`) from the connection's resolved
//! parameters, whatever their source (a literal, a `file:` or the control plane), with
//! the token URL checked against the plain-http rule; and the fields of its `oauth`
//! settings every token request adds.
//!
//! Boundary: reading and checking only; `token_endpoint` decides when, `oauth` uses them.
//! Values are resolved by `values`, as every other parameter is: this module never asks
//! a backend itself.

use crate::config::model::{ClientAuth, OAuth};
use crate::http::url::check_url;
use crate::resolve::PlannedConnection;
use crate::secret::Secret;
use crate::source::client_auth::Material;
use crate::source::oauth::{AppKey, Credentials};
use crate::source::values::{self, Fetched};
use crate::source::SetupError;
use std::collections::{BTreeMap, HashMap};

/// The parameters an OAuth client may need, whatever its method.
pub const CLIENT_KEYS: [&str; 6] =
    ["TokenURL", "ConsumerKey", "ConsumerSecret", "ClientPrivateKey", "ClientCertificate", "ClientKey"];

/// The client credentials of `p` from `params`, its resolved parameters (key → value,
/// as `values::materialize` gives them; other keys are ignored). A missing key is a
/// [`SetupError::Credential`], a token URL connd refuses a [`SetupError::TokenUrl`].
pub fn from_params(
    p: &PlannedConnection,
    params: &BTreeMap<String, Secret>,
    allow_insecure_http: bool,
) -> Result<Credentials, SetupError> {
    let value = |key: &'static str| -> Result<&Secret, SetupError> {
        params.get(key).ok_or_else(|| SetupError::Credential { connection: p.name.clone(), key })
    };
    let token_url = value("TokenURL")?;
    let client_id = value("ConsumerKey")?;
    let url = check_url(token_url.expose(), allow_insecure_http).map_err(|source| SetupError::TokenUrl {
        connection: p.name.clone(),
        key: "TokenURL",
        source,
    })?;
    let default = OAuth::default();
    let oauth = p.connection.oauth.as_ref().unwrap_or(&default);
    let auth = material(oauth, &value)?;
    let key = AppKey::new(token_url.expose(), client_id.expose(), &oauth.scopes)
        .secret_client_id(p.connection.parameters.get("ConsumerKey").is_some_and(|k| k.secret))
        .asked(oauth.client_auth, oauth.grant.clone(), fields(oauth));
    Ok(Credentials { key, url, auth })
}

/// What `check` can prove of `p`'s OAuth client without contacting anything: when every
/// parameter its method reads is local, the token URL passes the plain-http rule and the
/// keys are usable (docs/oauth.md). Control-plane parameters are left for `env` to check.
pub fn check_local(p: &PlannedConnection, allow_insecure_http: bool) -> Result<(), SetupError> {
    let params = values::resolve_keys(p, &CLIENT_KEYS, None)?;
    let method = p.connection.oauth.as_ref().map(|o| o.client_auth).unwrap_or_default();
    let needed = ["TokenURL", "ConsumerKey"].iter().chain(method.needs());
    if !needed.into_iter().all(|k| params.contains_key(*k)) {
        return Ok(());
    }
    let creds = from_params(p, &params, allow_insecure_http)?;
    crate::source::client_auth::check(&creds.auth)
        .map_err(|source| SetupError::ClientAuth { connection: p.name.clone(), source })
}

/// What `oauth.client_auth` reads, from the parameters (`value`) and the settings.
fn material<'a>(
    oauth: &OAuth,
    value: &impl Fn(&'static str) -> Result<&'a Secret, SetupError>,
) -> Result<Material, SetupError> {
    let audience = oauth.assertion_audience.clone();
    Ok(match oauth.client_auth {
        ClientAuth::Basic => Material::Basic { secret: value("ConsumerSecret")?.clone() },
        ClientAuth::Post => Material::Post { secret: value("ConsumerSecret")?.clone() },
        ClientAuth::ClientSecretJwt => Material::ClientSecretJwt { secret: value("ConsumerSecret")?.clone(), audience },
        ClientAuth::PrivateKeyJwt => Material::PrivateKeyJwt {
            key_pem: value("ClientPrivateKey")?.clone(),
            key_id: oauth.key_id.clone(),
            alg: oauth.signing_alg.clone(),
            audience,
        },
        ClientAuth::TlsClientAuth => Material::TlsClientAuth {
            cert_pem: value("ClientCertificate")?.clone(),
            key_pem: value("ClientKey")?.clone(),
        },
        // The config check makes sure it is set; an empty path fails the request, not the plan.
        ClientAuth::Federated => {
            Material::Federated { assertion_file: oauth.assertion_file.clone().unwrap_or_default() }
        }
    })
}

/// The form fields of `oauth` every token request adds: `audience`, `resource`, then
/// `params`, in that order (part of the token cache's key).
pub fn fields(oauth: &OAuth) -> Vec<(String, String)> {
    let audience = oauth.audience.iter().map(|a| ("audience".to_owned(), a.clone()));
    let resource = oauth.resource.iter().map(|r| ("resource".to_owned(), r.clone()));
    let params = oauth.params.iter().map(|(k, v)| (k.clone(), v.clone()));
    audience.chain(resource).chain(params).collect()
}

/// The client parameters of `p` ([`CLIENT_KEYS`]) resolved as every parameter is, the
/// control plane's from `fetched` (or left out when `fetched` is `None`, as `check` has
/// it); `file:` values are read on the blocking pool.
pub async fn resolve(p: &PlannedConnection, fetched: Option<&Fetched>) -> Result<BTreeMap<String, Secret>, SetupError> {
    let from_file =
        CLIENT_KEYS.iter().any(|k| p.connection.parameters.get(k).is_some_and(|v| v.source.file().is_some()));
    if !from_file {
        return Ok(values::resolve_keys(p, &CLIENT_KEYS, fetched)?);
    }
    // Only this connection's answer travels to the blocking pool.
    let own = fetched.map(|f| Fetched {
        params: f
            .params
            .get(&p.connection.id)
            .map(|v| HashMap::from([(p.connection.id.clone(), v.clone())]))
            .unwrap_or_default(),
        tokens: HashMap::new(),
    });
    let owned = p.clone();
    let read = tokio::task::spawn_blocking(move || values::resolve_keys(&owned, &CLIENT_KEYS, own.as_ref())).await;
    read.unwrap_or_else(|_| {
        Err(values::ValueError::Missing {
            connection: p.name.clone(),
            key: "ConsumerSecret".into(),
            cause: "the read was interrupted".into(),
        })
    })
    .map_err(SetupError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diag::Origin;
    use crate::config::model::{Connection, Parameter, RefKind, Security, Source, Visibility};
    use std::sync::Arc;

    /// An OAuth connection whose client parameters come from each source kind.
    fn connection(key_file: &std::path::Path) -> PlannedConnection {
        let param = |source| Parameter { source, secret: true, origin: Origin::file("c.yaml") };
        let parameters = BTreeMap::from([
            ("TokenURL".to_owned(), param(Source::Value(Secret::new("https://sts.example/token")))),
            ("ConsumerKey".to_owned(), param(Source::File(key_file.to_path_buf()))),
            ("ConsumerSecret".to_owned(), param(Source::ControlPlane)),
        ]);
        let connection = Connection {
            id: "19d2648b-d29c-4452-afdd-1b9311e81412".into(),
            name: "hr".into(),
            project: "p".into(),
            visibility: Visibility::Project,
            owner: None,
            resource_ref: None,
            security: Security::OAuth2,
            oauth: None,
            parameters: parameters.into(),
            proxy_headers: Vec::new(),
            proxy_port: None,
            origin: Origin::file("c.yaml"),
        };
        PlannedConnection { name: "hr".into(), kind: RefKind::ThirdParty, connection: Arc::new(connection) }
    }

    #[tokio::test]
    async fn client_credentials_come_from_every_source_kind() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "client-7\n").unwrap();
        let p = connection(&key_file);
        let answer = HashMap::from([("ConsumerSecret".to_owned(), Secret::new("s3cret"))]);
        let fetched = Fetched { params: HashMap::from([(p.connection.id.clone(), answer)]), tokens: HashMap::new() };

        let params = resolve(&p, Some(&fetched)).await.unwrap();
        let creds = from_params(&p, &params, false).unwrap();
        assert_eq!(creds.key.token_url, "https://sts.example/token");
        assert_eq!(creds.key.client_id, "client-7");
        assert_eq!(creds.auth, Material::Basic { secret: Secret::new("s3cret") });

        // Without the control plane's answer (as `check` resolves), the secret is missing.
        let local = resolve(&p, None).await.unwrap();
        assert_eq!(local.len(), 2);
        let Err(missing) = from_params(&p, &local, false) else { panic!("credentials without a secret") };
        assert!(matches!(missing, SetupError::Credential { key: "ConsumerSecret", .. }), "{missing:?}");
    }
}

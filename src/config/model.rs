//! The validated connection config: types that cannot hold what the checks refuse.
//! Built by `validate` from the raw documents; read by `resolve` and every layer after
//! it. What a connection offers (its keys, which are remote, whether it is OAuth) is
//! answered here, once, by methods on [`Connection`].

pub use super::raw::{ClientAuth, Security, Visibility};
use crate::config::diag::Origin;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Who this component is: the project it belongs to and its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub project: String,
    pub component: String,
}

/// What a connection points at, from its `resourceRef` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Service,
    ThirdParty,
    Database,
    Storage,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Service => "service",
            RefKind::ThirdParty => "thirdparty",
            RefKind::Database => "database",
            RefKind::Storage => "storage",
        }
    }
}

/// A `resourceRef` that matched its grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub kind: RefKind,
    pub text: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone)]
pub struct OAuth {
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
}

/// Where a parameter's value comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Written in the descriptor.
    Value(Secret),
    /// A local file's content, one trailing newline trimmed.
    File(PathBuf),
    /// Fetched from the control plane.
    Remote,
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Value(_) => "value".into(),
            Source::File(path) => format!("file:{}", path.display()),
            Source::Remote => "remote".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Parameter {
    pub source: Source,
    /// Never logged, never shown by `check`.
    pub secret: bool,
    /// Where the descriptor gives it: the line of its key under `parameters`.
    pub origin: Origin,
}

/// One `kind: Connection` descriptor.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Lower-case UUID.
    pub id: String,
    pub name: String,
    pub project: String,
    pub visibility: Visibility,
    /// The owning component; set exactly when `visibility` is `component`.
    pub owner: Option<String>,
    pub resource_ref: Option<ResourceRef>,
    pub security: Security,
    /// Set exactly when `security` is `oauth2`.
    pub oauth: Option<OAuth>,
    pub parameters: BTreeMap<String, Parameter>,
    pub origin: Origin,
}

/// The name of the token parameter that OAuth connections add.
pub const ACCESS_TOKEN: &str = "AccessToken";

/// What a connection offers; every layer asks these, none works them out itself.
impl Connection {
    /// Under OAuth (`security: oauth2`): connd obtains its `AccessToken`.
    pub fn is_oauth(&self) -> bool {
        self.security == Security::OAuth2
    }

    /// The keys it offers, as `/v1/connections` lists them: its parameters in key order,
    /// then `AccessToken` under OAuth.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.parameters.keys().map(String::as_str).chain(self.is_oauth().then_some(ACCESS_TOKEN))
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.parameters.contains_key(key) || (key == ACCESS_TOKEN && self.is_oauth())
    }

    /// Its `remote: true` parameters, in key order: what the control plane is asked for.
    pub fn remote_keys(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().filter(|(_, p)| matches!(p.source, Source::Remote)).map(|(k, _)| k.as_str())
    }

    /// Whether some parameter comes from the control plane.
    pub fn needs_remote(&self) -> bool {
        self.remote_keys().next().is_some()
    }
}

/// Keys ending in `Secret`, `Password`, `APIKey`, `ApiKey` or `Token` hold secrets unless
/// the descriptor says `secret: false`. The match ignores case and separators, so that
/// `client_secret`, `DB_PASSWORD` and `api-key` are secret too: redacting one value too
/// many is the safe side.
pub fn secret_by_default(key: &str) -> bool {
    let folded: String = key.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    ["secret", "password", "apikey", "token"].iter().any(|end| folded.ends_with(end))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_keys() {
        for key in [
            "ConsumerSecret",
            "Password",
            "ChoreoAPIKey",
            "ApiKey",
            "AccessToken",
            "client_secret",
            "DB_PASSWORD",
            "api-key",
        ] {
            assert!(super::secret_by_default(key), "{key}");
        }
        for key in ["ServiceURL", "TokenURL", "Username", "Port", "secretary_name"] {
            assert!(!super::secret_by_default(key), "{key}");
        }
    }
}

/// The component's `component.yaml`, validated.
#[derive(Debug, Clone, Default)]
pub struct ComponentSpec {
    pub schema_version: String,
    pub connection_refs: Vec<ConnectionRef>,
    pub service_refs: Vec<ServiceRef>,
    pub env: Vec<EnvEntry>,
    /// `configurations.file[]`, each checked on its own.
    pub files: Vec<super::filespec::FileSpec>,
}

#[derive(Debug, Clone)]
pub struct ConnectionRef {
    pub name: String,
    pub resource_ref: ResourceRef,
    pub origin: Origin,
}

/// A legacy `serviceReferences` entry: only the mapped keys are injected.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub name: String,
    pub connection_id: String,
    pub env: Vec<(String, String)>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub enum EnvValue {
    Literal(String),
    ConnectionRef {
        name: String,
        key: String,
    },
    /// A source connd cannot serve (`configGroupRef`, `configForm`).
    Unsupported(&'static str),
}

#[derive(Debug, Clone)]
pub struct EnvEntry {
    pub name: String,
    pub value: EnvValue,
    pub origin: Origin,
}

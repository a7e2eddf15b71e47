//! The validated connection config: types that cannot hold what the checks refuse.
//! Built by `validate` from the raw documents; read by `resolve` and every layer after
//! it. What a connection offers (its keys, which come from the control plane, whether it
//! is OAuth) is answered here, once, by methods on [`Connection`]; where a value comes
//! from, by methods on [`Source`].

pub use super::oauth::{ClientAuth, Grant, OAuth};
pub use super::raw::{Security, Visibility};
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

/// Where a parameter's value comes from: the source kind. Every layer decides about a
/// kind by an exhaustive `match` (here or at its use), so that a new kind is a variant,
/// its backend's module under `source/`, and the places the compiler then names.
#[derive(Debug, Clone)]
pub enum Source {
    /// Written in the descriptor (`value:`, or a plain string): a local value.
    Value(Secret),
    /// A local file's content, one trailing newline trimmed (`file:`): a local value.
    File(PathBuf),
    /// Fetched from the control plane (`remote: true`, the user's word for it).
    ControlPlane,
}

impl Source {
    /// The local file the value is read from, which planning reads and a reload watches.
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            Source::File(path) => Some(path),
            Source::Value(_) | Source::ControlPlane => None,
        }
    }

    /// Whether the control plane is asked for it.
    pub fn is_control_plane(&self) -> bool {
        match self {
            Source::ControlPlane => true,
            Source::Value(_) | Source::File(_) => false,
        }
    }

    /// How `check` names the source: `value`, `file:PATH` or `remote` (the YAML key).
    pub fn describe(&self) -> String {
        match self {
            Source::Value(_) => "value".into(),
            Source::File(path) => format!("file:{}", path.display()),
            Source::ControlPlane => "remote".into(),
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

/// A connection's parameters by key, in key order, as a `BTreeMap` would hand them out:
/// a sorted slice sized exactly, looked up by binary search. A directory of thousands of
/// connections holds every one of them for the whole run, and a map's node keeps room
/// for eleven entries where a connection has a handful.
#[derive(Debug, Clone, Default)]
pub struct Parameters(Box<[(String, Parameter)]>);

impl Parameters {
    pub fn get(&self, key: &str) -> Option<&Parameter> {
        // A connection's handful of keys mostly differ in length, which equality looks at
        // first: a scan compares fewer bytes than a binary search's orderings do.
        if self.0.len() <= 8 {
            return self.0.iter().find(|(k, _)| k == key).map(|(_, p)| p);
        }
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Key and parameter, in key order.
    pub fn iter(&self) -> ParameterIter<'_> {
        let pair: fn(&(String, Parameter)) -> (&String, &Parameter) = |(k, p)| (k, p);
        self.0.iter().map(pair)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> + Clone {
        self.0.iter().map(|(k, _)| k)
    }

    /// The parameters, in key order.
    pub fn values(&self) -> impl Iterator<Item = &Parameter> {
        self.0.iter().map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// [`Parameters::iter`]: `(&key, &parameter)` in key order.
pub type ParameterIter<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, Parameter)>,
    fn(&'a (String, Parameter)) -> (&'a String, &'a Parameter),
>;

impl<'a> IntoIterator for &'a Parameters {
    type Item = (&'a String, &'a Parameter);
    type IntoIter = ParameterIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Sorted by key; of two entries with one key, the later stays (a map's `insert`).
impl FromIterator<(String, Parameter)> for Parameters {
    fn from_iter<I: IntoIterator<Item = (String, Parameter)>>(iter: I) -> Self {
        let mut entries: Vec<(String, Parameter)> = iter.into_iter().collect();
        // Stable: equal keys keep their order, and the last of each run is kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        entries.reverse();
        Parameters(entries.into_boxed_slice())
    }
}

impl From<BTreeMap<String, Parameter>> for Parameters {
    fn from(map: BTreeMap<String, Parameter>) -> Self {
        Parameters(map.into_iter().collect())
    }
}

/// `parameters["ServiceURL"]`; panics on a key the connection lacks, as a map does.
impl std::ops::Index<&str> for Parameters {
    type Output = Parameter;
    fn index(&self, key: &str) -> &Parameter {
        match self.get(key) {
            Some(p) => p,
            None => panic!("no parameter {key}"),
        }
    }
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
    pub parameters: Parameters,
    /// Headers the egress proxy sets from parameters (`proxy.headers`), in name order.
    pub proxy_headers: Vec<ProxyHeader>,
    /// `proxy.port`: the connection's own loopback listener in `serve` and `run`
    /// (docs/proxy.md), unique in the directory.
    pub proxy_port: Option<ProxyPort>,
    pub origin: Origin,
}

/// A connection's `proxy.port`, and where the descriptor gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPort {
    /// 1 to 65535.
    pub port: u16,
    /// The line of `port` (or of `proxy`, in a one-line flow map).
    pub origin: Origin,
}

/// One `proxy.headers` entry: the egress proxy sends `name: <value of key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// A valid field name (RFC 9110 §5.1), not one the proxy manages itself.
    pub name: http::HeaderName,
    /// A key the connection offers (see [`offers`]).
    pub key: String,
}

/// The keys a connection offers: its parameters and, under OAuth, `AccessToken`.
/// [`Connection::has_key`] asks it; so does validation, before the connection is built.
pub fn offers(security: Security, parameters: &Parameters, key: &str) -> bool {
    parameters.contains_key(key) || (key == ACCESS_TOKEN && security == Security::OAuth2)
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
        offers(self.security, &self.parameters, key)
    }

    /// Its `remote: true` parameters, in key order: what the control plane is asked for.
    pub fn control_plane_keys(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().filter(|(_, p)| p.source.is_control_plane()).map(|(k, _)| k.as_str())
    }

    /// Whether some parameter comes from the control plane.
    pub fn needs_control_plane(&self) -> bool {
        self.control_plane_keys().next().is_some()
    }
}

/// Keys ending in `Secret`, `Password`, `APIKey`, `ApiKey`, `Token`, `PrivateKey` or
/// `ClientKey` (the private keys of client authentication, docs/oauth.md) hold secrets
/// unless the descriptor says `secret: false`. The match ignores case and separators, so that
/// `client_secret`, `DB_PASSWORD` and `api-key` are secret too: redacting one value too
/// many is the safe side.
pub fn secret_by_default(key: &str) -> bool {
    // The key's letters and digits from the end, lower-cased, against each ending read
    // backwards: no folded copy of the key is made (every parameter and variable asks).
    let folded = || key.bytes().rev().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase());
    ["secret", "password", "apikey", "token", "privatekey", "clientkey"].iter().any(|end| {
        let mut folded = folded();
        end.bytes().rev().all(|e| folded.next() == Some(e))
    })
}

/// A name a POSIX shell and `execve` accept as an environment variable.
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
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
            "ClientPrivateKey",
            "ClientKey",
        ] {
            assert!(super::secret_by_default(key), "{key}");
        }
        for key in ["ServiceURL", "TokenURL", "Username", "Port", "secretary_name", "ConsumerKey", "ClientCertificate"]
        {
            assert!(!super::secret_by_default(key), "{key}");
        }
    }

    #[test]
    fn parameters_read_as_a_map() {
        use super::{Parameter, Parameters, Source};
        let param = |line| Parameter {
            source: Source::ControlPlane,
            secret: false,
            origin: crate::config::Origin::at("c.yaml", line),
        };
        let params: Parameters =
            [("b", 1), ("a", 2), ("c", 3), ("a", 4)].into_iter().map(|(k, line)| (k.to_owned(), param(line))).collect();
        let listed: Vec<(&str, Option<usize>)> = params.iter().map(|(k, p)| (k.as_str(), p.origin.line)).collect();
        assert_eq!(
            listed,
            [("a", Some(4)), ("b", Some(1)), ("c", Some(3))],
            "in key order, the later of a doubled key kept"
        );
        assert_eq!(params.len(), 3);
        assert_eq!(params.get("c").and_then(|p| p.origin.line), Some(3));
        assert!(params.contains_key("b") && !params.contains_key("B") && !params.contains_key(""));
        assert_eq!(params["a"].origin.line, Some(4));
        assert!(Parameters::default().get("a").is_none() && Parameters::default().is_empty());
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
    pub files: Vec<FileSpec>,
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
pub struct EnvEntry {
    pub name: String,
    pub value: ValueSource,
    pub origin: Origin,
}

// ---- files (docs/files.md), built by `filespec` ----

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Yaml,
    Json,
    Toml,
    /// `NAME='value'` lines, quoted as `connd env` quotes them.
    Dotenv,
    /// `key=value` lines, escaped as `java.util.Properties.load` reads them.
    Properties,
    /// A minijinja template, rendered strictly.
    Template,
}

impl FileFormat {
    pub fn parse(text: &str) -> Option<FileFormat> {
        Some(match text {
            "yaml" | "yml" => FileFormat::Yaml,
            "json" => FileFormat::Json,
            "toml" => FileFormat::Toml,
            "dotenv" | "env" => FileFormat::Dotenv,
            "properties" => FileFormat::Properties,
            "template" => FileFormat::Template,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Yaml => "yaml",
            FileFormat::Json => "json",
            FileFormat::Toml => "toml",
            FileFormat::Dotenv => "dotenv",
            FileFormat::Properties => "properties",
            FileFormat::Template => "template",
        }
    }

    /// Formats whose dotted names nest (`hr.serviceUrl` → `hr: {serviceUrl: ...}`).
    pub fn nests(self) -> bool {
        matches!(self, FileFormat::Yaml | FileFormat::Json | FileFormat::Toml)
    }
}

/// Where one value comes from, for a variable of `configurations.env` and for a value of a
/// file (`configurations.file`, `kind: File`) alike (docs/config.md, docs/files.md).
#[derive(Debug, Clone)]
pub enum ValueSource {
    Literal(String),
    ConnectionRef {
        name: String,
        key: String,
    },
    /// A source connd cannot serve (`configGroupRef`, `configForm`).
    Unsupported(&'static str),
}

#[derive(Debug, Clone)]
pub struct FileValue {
    /// As written: dotted for nesting formats.
    pub name: String,
    pub source: ValueSource,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub enum Body {
    Values(Vec<FileValue>),
    /// The template text and the line of the config file its first line is on.
    Template {
        text: String,
        first_line: usize,
    },
}

/// One file to render, checked on its own.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Absolute, without `.` or `..`: where the file appears under `--files-root`.
    pub path: PathBuf,
    pub format: FileFormat,
    /// Permission bits.
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub body: Body,
    pub origin: Origin,
    /// The entry itself has errors, already reported (a bad mode, a `..` path): its body
    /// is still checked against the connections, so that one run lists every error, but
    /// the file is not planned. `path` is then as written.
    pub check_only: bool,
}

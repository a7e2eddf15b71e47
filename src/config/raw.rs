//! The YAML as written, before validation. connd's own documents (`kind: Component`,
//! `kind: Connection`) reject unknown keys; the platform's `component.yaml` accepts and
//! ignores the keys connd has no use for (`endpoints`, `proxy`, `configurations.file`, ...).
//! Every type deserializes straight from the document text, so the parser's errors keep
//! their line numbers.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

use super::scalar;
pub use super::scalar::Scalar;

// ---- connd's own documents ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ComponentDoc {
    #[allow(dead_code)]
    pub kind: String,
    pub project: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Project,
    Component,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Security {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "oauth2")]
    OAuth2,
    #[serde(rename = "apiKey")]
    ApiKey,
}

/// `oauth`: checked by `config::oauth` (docs/oauth.md). Method and grant names are
/// strings here, so that a misspelt one gets a "did you mean".
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct OAuth {
    #[serde(default)]
    pub scopes: Vec<String>,
    pub client_auth: Option<String>,
    pub grant: Option<String>,
    pub key_id: Option<String>,
    pub signing_alg: Option<String>,
    pub assertion_file: Option<String>,
    pub assertion_audience: Option<String>,
    pub subject_token_file: Option<String>,
    pub subject_token_type: Option<String>,
    #[serde(default)]
    pub audience: OneOrMany,
    #[serde(default)]
    pub resource: OneOrMany,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A string or a list of strings.
#[derive(Debug, Default)]
#[cfg_attr(test, derive(PartialEq))]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            One(String),
            Many(Vec<String>),
        }
        Ok(OneOrMany(match Shape::deserialize(d)? {
            Shape::One(s) => vec![s],
            Shape::Many(v) => v,
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct ConnectionDoc {
    #[allow(dead_code)]
    pub kind: String,
    pub id: String,
    pub name: String,
    pub project: String,
    pub visibility: Option<Visibility>,
    pub component: Option<String>,
    pub resource_ref: Option<String>,
    #[serde(default)]
    pub security: Security,
    pub oauth: Option<OAuth>,
    #[serde(default)]
    pub parameters: Params,
    /// How the egress proxy authenticates calls to this connection (docs/config.md, docs/proxy.md).
    #[serde(default, deserialize_with = "proxy_map")]
    pub proxy: Option<ProxySpec>,
}

/// `proxy: { headers: { Header-Name: ParameterKey }, port: 15001 }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ProxySpec {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The connection's own loopback listener (docs/proxy.md), as written: validation
    /// judges it, so that a bad one is said in words with its line.
    pub port: Option<PortSpec>,
}

/// `proxy` is a map; anything else (`proxy: 15001`) is said so, with the shape to write.
fn proxy_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ProxySpec>, D::Error> {
    struct Shape;
    impl<'de> Visitor<'de> for Shape {
        type Value = Option<ProxySpec>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "`proxy` as a map, e.g. `proxy: { port: 15001 }` or `proxy: { headers: { X-Api-Key: ChoreoAPIKey } }`",
            )
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            ProxySpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Shape)
}

/// `proxy.port` as YAML read it; validation reads a number's text as written from the
/// document, so that a message quotes it.
#[derive(Debug)]
pub enum PortSpec {
    Number(u64),
    Negative(i64),
    /// An integer beyond 64 bits.
    Huge,
    Fraction(f64),
    /// Quoted (`"15001"`) or not a number at all (`abc`).
    Text(String),
    /// A boolean, a list, a map, a null: nothing a port can be.
    Other,
}

/// For comparing two readings of one document: a NaN is the same NaN.
#[cfg(test)]
impl PartialEq for PortSpec {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PortSpec::Fraction(a), PortSpec::Fraction(b)) => a.to_bits() == b.to_bits(),
            (a, b) => format!("{a:?}") == format!("{b:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortSpec, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortSpec, E> {
                Ok(PortSpec::Number(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortSpec, E> {
                Ok(u64::try_from(n).map_or(PortSpec::Negative(n), PortSpec::Number))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<PortSpec, E> {
                Ok(PortSpec::Huge)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<PortSpec, E> {
                Ok(PortSpec::Huge)
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<PortSpec, E> {
                Ok(PortSpec::Fraction(f))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PortSpec, E> {
                Ok(PortSpec::Text(s.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PortSpec, E> {
                Ok(PortSpec::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<PortSpec, E> {
                Ok(PortSpec::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<PortSpec, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(PortSpec::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PortSpec, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(PortSpec::Other)
            }
        }
        d.deserialize_any(Any)
    }
}

/// A parameter: a plain scalar is a literal value, a map names its source.
#[cfg_attr(test, derive(PartialEq))]
pub enum Param {
    /// A string as written (quoted, or plain text that YAML does not type).
    Plain(String),
    /// A plain scalar that YAML reads as a number or a boolean: its text is not known
    /// here, and is taken from the document by [`scalar::plain_texts`].
    Typed,
    Spec(ParamSpec),
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Plain(_) | Param::Typed => f.write_str(crate::secret::REDACTED),
            Param::Spec(spec) => spec.fmt(f),
        }
    }
}

/// `parameters`: a map that refuses a key given twice (YAML parsers keep the last one,
/// which would silently drop a value).
#[derive(Debug, Default)]
#[cfg_attr(test, derive(PartialEq))]
pub struct Params(pub BTreeMap<String, Param>);

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of parameter keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("parameter {key} is given twice")));
                    }
                    let value = map.next_value::<Param>()?;
                    out.insert(key, value);
                }
                Ok(Params(out))
            }
        }
        d.deserialize_map(ParamsVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ParamSpec {
    #[serde(default, deserialize_with = "scalar::written")]
    pub value: Option<Scalar>,
    pub file: Option<String>,
    pub remote: Option<bool>,
    pub secret: Option<bool>,
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParamVisitor;
        impl<'de> Visitor<'de> for ParamVisitor {
            type Value = Param;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a literal value, or a map with one of `value`, `file` or `remote: true`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
                Ok(Param::Plain(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Param, E> {
                Ok(Param::Typed)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Param, E> {
                Ok(Param::Typed)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Param, E> {
                Ok(Param::Typed)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Param, E> {
                Ok(Param::Typed)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Param, E> {
                Ok(Param::Typed)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Param, E> {
                Ok(Param::Typed)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Param, E> {
                Err(E::custom(scalar::NULL_MESSAGE))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Param, A::Error> {
                ParamSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Param::Spec)
            }
        }
        d.deserialize_any(ParamVisitor)
    }
}

// ---- the platform's component.yaml ----

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct ComponentYaml {
    pub schema_version: Option<Scalar>,
    #[serde(default)]
    pub dependencies: Dependencies,
    pub configurations: Option<Configurations>,
    /// The older spelling of `configurations`.
    pub configuration: Option<Configurations>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct Dependencies {
    #[serde(default)]
    pub connection_references: Vec<ConnectionReference>,
    #[serde(default)]
    pub service_references: Vec<ServiceReference>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct ConnectionReference {
    pub name: String,
    pub resource_ref: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct ServiceReference {
    pub name: String,
    pub connection_config: String,
    #[serde(default)]
    pub env: Vec<EnvMapping>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
pub struct EnvMapping {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(PartialEq))]
pub struct Configurations {
    #[serde(default)]
    pub env: Vec<EnvEntry>,
    /// Files to render (docs/files.md); checked by `filespec`.
    #[serde(default)]
    pub file: Vec<RawComponentFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct EnvEntry {
    pub name: String,
    #[serde(default, deserialize_with = "scalar::written")]
    pub value: Option<Scalar>,
    pub value_from: Option<ValueFrom>,
    /// A `connectionRef` beside `valueFrom` instead of under it (an indentation slip):
    /// read only to say so.
    #[serde(default)]
    pub connection_ref: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct ValueFrom {
    pub connection_ref: Option<ConnectionRef>,
    pub config_group_ref: Option<serde_yaml::Value>,
    pub config_form: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ConnectionRef {
    pub name: String,
    pub key: String,
}

// ---- files (docs/files.md), checked by `filespec` ----

/// One `configurations.file[]` entry. Keys connd has no use for are accepted, as
/// elsewhere in component.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct RawComponentFile {
    pub name: String,
    pub mount_path: String,
    #[serde(rename = "type")]
    pub format: Option<String>,
    #[serde(default)]
    pub values: Vec<RawValue>,
}

/// One entry of `values:`: a literal `value` or a `valueFrom`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(PartialEq))]
pub struct RawValue {
    pub name: String,
    pub value: Option<Scalar>,
    pub value_from: Option<ValueFrom>,
    /// A `connectionRef` beside `valueFrom` instead of under it: read only to say so.
    #[serde(default)]
    pub connection_ref: Option<serde_yaml::Value>,
}

/// A `kind: File` document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(PartialEq))]
pub struct FileDoc {
    #[allow(dead_code)]
    pub kind: String,
    pub path: String,
    pub format: String,
    pub mode: Option<Scalar>,
    pub owner: Option<Scalar>,
    pub group: Option<Scalar>,
    pub values: Option<Vec<RawValue>>,
    pub template: Option<String>,
}

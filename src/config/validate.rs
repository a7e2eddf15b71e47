//! From raw documents to the validated model: each check reports into the shared
//! diagnostics and keeps going, so one run shows every error. Only the problems of a
//! single document are found here; cross-references (visibility, references, variable
//! names) are `resolve`'s.

use super::diag::{Diagnostics, Origin};
use super::files::{Document, SourceFile};
use super::model::{self, ComponentSpec, Connection, EnvValue, Identity, Parameter, RefKind, ResourceRef, Source};
use super::raw;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

/// The names the platform allows for connections: 3 to 50 characters, starting with a
/// letter, then letters, digits, spaces, `-` or `_`, not ending in a space, `-` or `_`.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    let mut chars = name.chars();
    (3..=50).contains(&n)
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

pub const NAME_RULE: &str =
    "use 3 to 50 characters: a letter first, then letters, digits, spaces, '-' or '_', ending in a letter or digit";

/// A UUID in its 8-4-4-4-12 hex form; returns it lower-cased.
pub fn parse_uuid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups.iter().zip(lens).all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| text.to_ascii_lowercase())
}

/// A name a POSIX shell and `execve` accept as an environment variable.
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub const RESOURCE_REF_GRAMMAR: &str =
    "write it as service:/Project/component/v1/endpoint/PUBLIC (or PROJECT, ORGANIZATION), \
     thirdparty:name/v1, database:server/db or storage:name";

/// Parses a `resourceRef` against its grammar.
pub fn parse_resource_ref(text: &str) -> Option<ResourceRef> {
    let segment = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let (scheme, rest) = text.split_once(':')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let kind = match scheme {
        "service" => {
            let ok = parts.len() == 6
                && parts[0].is_empty()
                && parts[1..].iter().all(|p| segment(p))
                && ["PUBLIC", "PROJECT", "ORGANIZATION"].contains(&parts[5].to_ascii_uppercase().as_str());
            ok.then_some(RefKind::Service)?
        }
        "thirdparty" => (parts.len() == 2 && parts.iter().all(|p| segment(p))).then_some(RefKind::ThirdParty)?,
        "database" => (parts.len() == 2 && parts.iter().all(|p| segment(p))).then_some(RefKind::Database)?,
        "storage" => (parts.len() == 1 && segment(parts[0])).then_some(RefKind::Storage)?,
        _ => return None,
    };
    Some(ResourceRef { kind, text: text.to_owned() })
}

/// Deserializes one document, turning a parser error into a diagnostic at its line.
fn parse<T: DeserializeOwned>(path: &Path, doc: &Document<'_>, what: &str, diags: &mut Diagnostics) -> Option<T> {
    // Keys that connd ignores are skipped unexpanded, so an alias bomb under one would
    // pass unseen. A document that defines anchors is expanded once in full, under the
    // parser's repetition limit, so that every bomb is refused the same way.
    let expanded =
        if doc.text.contains('&') { serde_yaml::from_str::<serde_yaml::Value>(doc.text).err() } else { None };
    let parsed = match expanded {
        Some(e) => Err(e),
        None => serde_yaml::from_str::<T>(doc.text),
    };
    match parsed {
        Ok(value) => Some(value),
        Err(e) => {
            let line = e.location().map(|l| doc.first_line + l.line() - 1).unwrap_or(doc.first_line);
            let mut message = parser_message(&e);
            if message.contains("repetition limit") {
                message = "YAML aliases expand past the parser's repetition limit (an alias bomb)".into();
            }
            let fix = if message.contains("unknown field") {
                format!("remove the key, or correct its spelling; see the {what} format in the README")
            } else if message.contains("repetition limit") || message.contains("recursion limit") {
                "write the values out instead of nesting aliases (`*name`) in this document".to_owned()
            } else {
                format!("correct the YAML of this {what}")
            };
            diags.error(Origin::at(path, line), message, fix);
            None
        }
    }
}

/// The parser's message without its own " at line L column C" suffix (the origin says
/// it), and without the offending value: a secret pasted under the wrong key must not be
/// echoed into logs. `invalid type: string "s3cret", expected a boolean` becomes
/// `invalid type: a string, expected a boolean`.
fn parser_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    redact_values(text)
}

fn redact_values(text: &str) -> String {
    // serde's `Unexpected` renderings, which quote the offending value, and what to say
    // instead. Under `parameters` a flow-map typo (`Password: {s3cret}`) turns a value
    // into a "field name", so field names are redacted there too.
    const QUOTED: [(&str, char, &str); 6] = [
        ("string \"", '"', "a string"),
        ("integer `", '`', "an integer"),
        ("floating point `", '`', "a floating point number"),
        ("boolean `", '`', "a boolean"),
        ("character '", '\'', "a character"),
        ("variant `", '`', "variant"),
    ];
    let field = ("field `", '`', "field");
    let markers: Vec<(&str, char, &str)> =
        QUOTED.into_iter().chain(text.starts_with("parameters.").then_some(field)).collect();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = markers.iter().filter_map(|m| rest.find(m.0).map(|i| (i, m))).min_by_key(|(i, _)| *i);
        let Some((i, &(open, close, replacement))) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        out.push_str(replacement);
        let after = &rest[i + open.len()..];
        // Values may contain the closing quote escaped; the parser writes `\"`.
        let mut end = None;
        let mut escaped = false;
        for (j, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == close && !escaped => {
                    end = Some(j);
                    break;
                }
                _ => escaped = false,
            }
        }
        match end {
            Some(j) => rest = &after[j + close.len_utf8()..],
            None => return out,
        }
    }
}

/// The `kind` of a document, read from its top-level `kind:` line without a full parse.
fn kind_of(doc: &Document<'_>) -> Option<String> {
    let from_line = doc.text.lines().find_map(|l| {
        let v = l.strip_prefix("kind:")?;
        Some(v.split(" #").next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned())
    });
    from_line.or_else(|| {
        // Flow style (`{kind: Connection, ...}`): ask the parser.
        let value: serde_yaml::Value = serde_yaml::from_str(doc.text).ok()?;
        value.get("kind")?.as_str().map(str::to_owned)
    })
}

/// What a file of connd documents contributes.
#[derive(Debug, Default)]
pub struct Documents {
    pub identities: Vec<(Identity, Origin)>,
    pub connections: Vec<Arc<Connection>>,
    /// Some document failed to parse: a reference to it would be a confusing second error.
    pub had_errors: bool,
}

/// Reads every document of a non-`component.yaml` file.
/// Reads one document of a file other than `component.yaml`.
pub fn connd_document(path: &Path, doc: &Document<'_>, out: &mut Documents, diags: &mut Diagnostics) {
    let before = diags.len();
    let origin = Origin::at(path, doc.first_line);
    match kind_of(doc).as_deref() {
        Some("Connection") => {
            if let Some(raw) = parse::<raw::ConnectionDoc>(path, doc, "Connection", diags) {
                if let Some(c) = connection(raw, path, doc, diags) {
                    out.connections.push(Arc::new(c));
                }
            }
        }
        Some("Component") => {
            if let Some(raw) = parse::<raw::ComponentDoc>(path, doc, "Component", diags) {
                let line = doc.line_of("name", 0).unwrap_or(doc.first_line);
                out.identities.push((Identity { project: raw.project, component: raw.name }, Origin::at(path, line)));
            }
        }
        Some(other) => diags.error(
            origin,
            format!("unknown kind {other:?}"),
            "use `kind: Connection` or `kind: Component`; the component's own config belongs in component.yaml",
        ),
        None => diags.error(
            origin,
            "document has no `kind`",
            "add `kind: Connection` or `kind: Component` as its first line",
        ),
    }
    out.had_errors |= diags.len() > before;
}

fn connection(raw: raw::ConnectionDoc, path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> Option<Connection> {
    let at = |key: &str| Origin::at(path, doc.line_of(key, 0).unwrap_or(doc.first_line));
    let before = diags.len();
    let id = parse_uuid(&raw.id);
    if id.is_none() {
        diags.error(
            at("id"),
            format!("connection id {:?} is not a UUID", raw.id),
            "use the connection's UUID as the platform shows it, e.g. 19d2648b-d29c-4452-afdd-1b9311e81412",
        );
    }
    if !valid_name(&raw.name) {
        diags.error(at("name"), format!("connection name {:?} breaks the naming rule", raw.name), NAME_RULE);
    }
    if raw.project.trim().is_empty() {
        diags.error(at("project"), "connection has an empty `project`", "name the project the connection belongs to");
    }
    let visibility = raw.visibility.unwrap_or(model::Visibility::Project);
    let owner = match (visibility, raw.component) {
        (model::Visibility::Component, None) => {
            diags.error(
                at("visibility"),
                format!("component connection {:?} has no owner", raw.name),
                "add `component: <owning component>`, or make it `visibility: project`",
            );
            None
        }
        (model::Visibility::Project, Some(c)) => {
            diags.error(
                at("component"),
                format!("project connection {:?} names an owner component {c:?}", raw.name),
                "remove `component:` (a project connection belongs to the whole project), or set `visibility: component`",
            );
            None
        }
        (_, owner) => owner,
    };
    let resource_ref = raw.resource_ref.as_deref().and_then(|text| {
        let parsed = parse_resource_ref(text);
        if parsed.is_none() {
            diags.error(at("resourceRef"), format!("resourceRef {text:?} is not valid"), RESOURCE_REF_GRAMMAR);
        }
        parsed
    });
    let mut parameters = std::collections::BTreeMap::new();
    for (key, param) in raw.parameters.0 {
        // Lines are looked up only for errors: the scan is the costly part of a valid load.
        let origin = || Origin::at(path, doc.line_of_under("parameters", &key).unwrap_or(doc.first_line));
        if key == model::ACCESS_TOKEN {
            diags.error(
                origin(),
                "AccessToken is the token connd obtains for OAuth connections; it cannot be a parameter",
                "remove it, and set `security: oauth2` with ConsumerKey, ConsumerSecret and TokenURL",
            );
            continue;
        }
        if let Some(p) = parameter(&key, param, path, origin, diags) {
            parameters.insert(key, p);
        }
    }
    let oauth = match (raw.security, raw.oauth) {
        (model::Security::OAuth2, oauth) => {
            let missing: Vec<&str> = ["ConsumerKey", "ConsumerSecret", "TokenURL"]
                .into_iter()
                .filter(|k| !parameters.contains_key(*k))
                .collect();
            if !missing.is_empty() {
                diags.error(
                    at("security"),
                    format!("OAuth connection {:?} lacks {}", raw.name, missing.join(", ")),
                    "add those parameters: an oauth2 connection needs ConsumerKey, ConsumerSecret and TokenURL",
                );
            }
            let oauth = oauth.unwrap_or_default();
            Some(model::OAuth { scopes: oauth.scopes, client_auth: oauth.client_auth })
        }
        (_, Some(_)) => {
            diags.error(
                at("oauth"),
                format!("connection {:?} has `oauth` settings but is not `security: oauth2`", raw.name),
                "set `security: oauth2`, or remove `oauth`",
            );
            None
        }
        (_, None) => None,
    };
    let proxy_headers = proxy_headers(&raw.name, raw.security, &parameters, raw.proxy, &at, diags);
    if diags.len() > before {
        return None;
    }
    Some(Connection {
        id: id?,
        name: raw.name,
        project: raw.project,
        visibility,
        owner,
        resource_ref,
        security: raw.security,
        oauth,
        parameters,
        proxy_headers,
        origin: at("name"),
    })
}

/// Fields the egress proxy manages itself (hop-by-hop, framing, routing), which
/// `proxy.headers` may not set.
const PROXY_MANAGED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// `proxy.headers`: each name a valid field name (RFC 9110 §5.1) that the proxy does not
/// manage, given once (names ignore case), each key one the connection offers.
fn proxy_headers(
    connection: &str,
    security: model::Security,
    parameters: &std::collections::BTreeMap<String, Parameter>,
    spec: Option<raw::ProxySpec>,
    at: &dyn Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Vec<model::ProxyHeader> {
    let mut out: Vec<model::ProxyHeader> = Vec::new();
    for (name, key) in spec.map(|s| s.headers).unwrap_or_default() {
        let origin = || at(&name);
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            diags.error(
                origin(),
                format!("proxy header {name:?} of connection {connection:?} is not a valid HTTP field name"),
                "use letters, digits and !#$%&'*+-.^_`|~ only (RFC 9110 §5.1), e.g. X-API-Key",
            );
            continue;
        };
        if PROXY_MANAGED.contains(&header.as_str()) {
            diags.error(
                origin(),
                format!("proxy header {name:?} of connection {connection:?} is one the proxy manages itself"),
                "remove it: hop-by-hop, framing and Host fields are set per hop (RFC 9110 §7.6.1)",
            );
            continue;
        }
        if out.iter().any(|h| h.name == header) {
            diags.error(
                origin(),
                format!("proxy header {name:?} of connection {connection:?} is given twice (names ignore case)"),
                "keep one of them",
            );
            continue;
        }
        if !model::offers(security, parameters, &key) {
            let mut offered: Vec<&str> = parameters.keys().map(String::as_str).collect();
            if security == model::Security::OAuth2 {
                offered.push(model::ACCESS_TOKEN);
            }
            diags.error(
                origin(),
                format!("proxy header {name:?} of connection {connection:?} names {key:?}, which it does not offer"),
                format!("name one of its keys: {}", offered.join(", ")),
            );
            continue;
        }
        out.push(model::ProxyHeader { name: header, key });
    }
    out
}

/// `file` is the descriptor's own path: relative `file:` sources are taken from its directory.
fn parameter(
    key: &str,
    param: raw::Param,
    file: &Path,
    origin: impl Fn() -> Origin,
    diags: &mut Diagnostics,
) -> Option<Parameter> {
    let dir = file;
    let default_secret = model::secret_by_default(key);
    match param {
        raw::Param::Plain(value) => Some(Parameter { source: Source::Value(value.into()), secret: default_secret }),
        raw::Param::Spec(spec) => {
            let remote = spec.remote.unwrap_or(false);
            let mut sources = Vec::new();
            if let Some(v) = spec.value {
                sources.push(Source::Value(v.0.into()));
            }
            if let Some(f) = spec.file {
                // A relative path is taken from the config directory, so a directory
                // can carry its own files (a ConfigMap mounts them beside the YAML).
                let dir = dir.parent().unwrap_or(Path::new("."));
                sources.push(Source::File(dir.join(f)));
            }
            if remote {
                sources.push(Source::Remote);
            }
            if sources.len() != 1 {
                let what = if sources.is_empty() { "no source" } else { "more than one source" };
                diags.error(
                    origin(),
                    format!("parameter {key} has {what}"),
                    "give exactly one of `value: ...`, `file: /path` or `remote: true`",
                );
                return None;
            }
            Some(Parameter { source: sources.remove(0), secret: spec.secret.unwrap_or(default_secret) })
        }
    }
}

/// Reads `component.yaml`.
pub fn component_yaml(file: &SourceFile, diags: &mut Diagnostics) -> Option<ComponentSpec> {
    let docs = super::files::documents(&file.text);
    let [doc] = docs.as_slice() else {
        let message = if docs.is_empty() {
            "component.yaml is empty"
        } else {
            "component.yaml holds more than one YAML document"
        };
        diags.error(
            Origin::file(&file.path),
            message,
            "component.yaml is the component's own config: one document with schemaVersion, dependencies and configurations",
        );
        return None;
    };
    let raw: raw::ComponentYaml = parse(&file.path, doc, "component.yaml", diags)?;
    let path = &file.path;
    let before = diags.len();
    let schema_version = raw.schema_version.map(|s| s.0).unwrap_or_default();
    let normalised = match schema_version.as_str() {
        "1" | "1.0" => "1.0",
        "1.1" => "1.1",
        "1.2" => "1.2",
        _ => "",
    };
    if normalised.is_empty() {
        let line = doc.line_of("schemaVersion", 0).unwrap_or(doc.first_line);
        let what = if schema_version.is_empty() {
            "no schemaVersion".to_owned()
        } else {
            format!("schemaVersion {schema_version:?}")
        };
        diags.error(
            Origin::at(path, line),
            format!("component.yaml has {what}"),
            "set `schemaVersion: 1.2` (connd reads 1.0, 1.1 and 1.2)",
        );
    }
    let lines = doc.entry_lines();
    let entry_origin = |key: &str, value: &str| Origin::at(path, lines.line(key, value));

    let mut spec = ComponentSpec { schema_version: normalised.to_owned(), ..Default::default() };
    for r in raw.dependencies.connection_references {
        let origin = entry_origin("name", &r.name);
        if !valid_name(&r.name) {
            diags.error(
                origin.clone(),
                format!("connection reference name {:?} breaks the naming rule", r.name),
                NAME_RULE,
            );
        }
        match parse_resource_ref(&r.resource_ref) {
            Some(resource_ref) => {
                spec.connection_refs.push(model::ConnectionRef { name: r.name, resource_ref, origin })
            }
            None => diags.error(
                entry_origin("resourceRef", &r.resource_ref),
                format!("resourceRef {:?} of connection reference {:?} is not valid", r.resource_ref, r.name),
                RESOURCE_REF_GRAMMAR,
            ),
        }
    }
    for r in raw.dependencies.service_references {
        let origin = entry_origin("name", &r.name);
        let Some(connection_id) = parse_uuid(&r.connection_config) else {
            diags.error(
                entry_origin("connectionConfig", &r.connection_config),
                format!("connectionConfig {:?} of service reference {:?} is not a UUID", r.connection_config, r.name),
                "set connectionConfig to the connection's ID, e.g. 19d2648b-d29c-4452-afdd-1b9311e81412",
            );
            continue;
        };
        let mut env = Vec::new();
        for m in r.env {
            if valid_env_name(&m.to) {
                env.push((m.from, m.to));
            } else {
                diags.error(
                    entry_origin("to", &m.to),
                    format!("{:?} is not a valid environment variable name", m.to),
                    "use letters, digits and '_', not starting with a digit",
                );
            }
        }
        spec.service_refs.push(model::ServiceRef { name: r.name, connection_id, env, origin });
    }
    if raw.configurations.is_some() && raw.configuration.is_some() {
        diags.error(
            Origin::at(path, doc.line_of("configuration", 0).unwrap_or(doc.first_line)),
            "component.yaml has both `configurations` and `configuration`",
            "keep one: `configurations` is the current spelling",
        );
    }
    for e in raw.configurations.or(raw.configuration).unwrap_or_default().env {
        let origin = entry_origin("name", &e.name);
        if !valid_env_name(&e.name) {
            diags.error(
                origin.clone(),
                format!("{:?} is not a valid environment variable name", e.name),
                "use letters, digits and '_', not starting with a digit",
            );
            continue;
        }
        let value = match (e.value, e.value_from) {
            (Some(v), None) => EnvValue::Literal(v.0),
            (None, Some(from)) => {
                let mut kinds = Vec::new();
                if let Some(c) = from.connection_ref {
                    kinds.push(EnvValue::ConnectionRef { name: c.name, key: c.key });
                }
                if from.config_group_ref.is_some() {
                    kinds.push(EnvValue::Unsupported("configGroupRef"));
                }
                if from.config_form.is_some() {
                    kinds.push(EnvValue::Unsupported("configForm"));
                }
                if kinds.len() != 1 {
                    diags.error(
                        origin,
                        format!("variable {} needs exactly one of connectionRef, configGroupRef or configForm under valueFrom", e.name),
                        "keep one source under valueFrom",
                    );
                    continue;
                }
                kinds.remove(0)
            }
            _ => {
                diags.error(
                    origin,
                    format!("variable {} needs exactly one of `value` or `valueFrom`", e.name),
                    "give a literal `value`, or a `valueFrom.connectionRef {name, key}`",
                );
                continue;
            }
        };
        spec.env.push(model::EnvEntry { name: e.name, value, origin });
    }
    (diags.len() == before).then_some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("hr-connection"));
        assert!(valid_name("My DB_1"));
        for bad in ["hr", "-hr", "1db", "hr-", "x".repeat(51).as_str(), "hr/conn"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn uuids() {
        assert_eq!(
            parse_uuid("19D2648B-d29c-4452-afdd-1b9311e81412").as_deref(),
            Some("19d2648b-d29c-4452-afdd-1b9311e81412")
        );
        assert!(parse_uuid("19d2648b-d29c-4452-afdd-1b9311e8141").is_none());
        assert!(parse_uuid("19d2648bd29c4452afdd1b9311e81412").is_none());
    }

    #[test]
    fn resource_refs() {
        for good in [
            "service:/HRProject/users/v1/ad088/PUBLIC",
            "thirdparty:stripe/v1",
            "database:pg-main/hr",
            "storage:bucket",
        ] {
            assert!(parse_resource_ref(good).is_some(), "{good}");
        }
        for bad in [
            "service:HRProject/users/v1/ad088/PUBLIC",
            "service:/a/b/v1/ep/SECRET",
            "thirdparty:stripe",
            "db:x/y",
            "storage:a b",
            "database:/x",
        ] {
            assert!(parse_resource_ref(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn parser_messages_do_not_echo_values() {
        assert_eq!(
            redact_values(r#"parameters.B.remote: invalid type: string "hun\"ter2", expected a boolean"#),
            "parameters.B.remote: invalid type: a string, expected a boolean"
        );
        assert_eq!(
            redact_values("visibility: unknown variant `hunter4`, expected `project` or `component`"),
            "visibility: unknown variant, expected `project` or `component`"
        );
        assert_eq!(redact_values("unknown field `a`, expected `id`"), "unknown field `a`, expected `id`");
        assert_eq!(
            redact_values("parameters.Pw: unknown field `hunter2`, expected one of `value`, `file`"),
            "parameters.Pw: unknown field, expected one of `value`, `file`"
        );
        assert_eq!(
            redact_values("parameters.B.remote: invalid type: integer `98765432`, expected a boolean"),
            "parameters.B.remote: invalid type: an integer, expected a boolean"
        );
        assert_eq!(
            redact_values("x: invalid type: floating point `1.5`, expected y"),
            "x: invalid type: a floating point number, expected y"
        );
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("_A1"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}

//! From raw documents to the validated model: each check reports into the shared
//! diagnostics and keeps going, so one run shows every error. Only the problems of a
//! single document are found here; cross-references (visibility, references, variable
//! names) are `resolve`'s.

use super::diag::{Diagnostics, Origin};
use super::files::{Document, EntryLines, SourceFile};
use super::model::{
    self, valid_env_name, ComponentSpec, Connection, Identity, Parameter, RefKind, ResourceRef, Source,
};
use super::{raw, scalar, suggest};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
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

/// Flow collections (`[`, `{`) open at once past this are refused before parsing:
/// libyaml's work grows with the square of the nesting (15,000 levels took seconds), and
/// the deserializer refuses anything past 128 levels anyway.
const MAX_FLOW_NESTING: usize = 1000;

/// The line where `doc` opens more than [`MAX_FLOW_NESTING`] flow collections at once,
/// if it does: a linear scan that over-counts brackets inside scalars, which is harmless
/// at this limit.
fn too_deep(doc: &Document<'_>) -> Option<usize> {
    let (mut depth, mut line) = (0usize, doc.first_line);
    for b in doc.text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_NESTING {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    None
}

/// Refuses a document nested too deeply to parse in bounded time.
fn refuse_deep(path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> bool {
    let Some(line) = too_deep(doc) else { return false };
    diags.error(
        Origin::at(path, line),
        format!("YAML nested more than {MAX_FLOW_NESTING} levels deep"),
        "write the document with the few levels its format has",
    );
    true
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
            let (message, fix) = explain(&e, doc, line, what);
            diags.error(Origin::at(path, line), message, fix);
            None
        }
    }
}

/// A parser error as a user reads it: what is wrong and what to do, with the nearest
/// known name where a name was misspelled.
fn explain(e: &serde_yaml::Error, doc: &Document<'_>, line: usize, what: &str) -> (String, String) {
    let raw = e.to_string();
    let message = parser_message(e);
    let line_text = doc.text.lines().nth(line.saturating_sub(doc.first_line)).unwrap_or("");
    let indent = &line_text[..line_text.len() - line_text.trim_start().len()];
    if indent.contains('\t') || (raw.contains("cannot start any token") && line_text.trim_start().starts_with('\t')) {
        return (
            "a tab in the indentation: YAML indents with spaces only".to_owned(),
            "replace the tab with spaces".to_owned(),
        );
    }
    if message.contains("repetition limit") {
        return (
            "YAML aliases expand past the parser's repetition limit (an alias bomb)".to_owned(),
            "write the values out instead of nesting aliases (`*name`) in this document".to_owned(),
        );
    }
    if message.contains("recursion limit") {
        return (message, "write the values out instead of nesting aliases (`*name`) in this document".to_owned());
    }
    if message.contains(scalar::NULL_MESSAGE) {
        return (message, scalar::NULL_FIX.to_owned());
    }
    let unknown = ["unknown field `", "unknown variant `"].iter().find_map(|m| {
        let rest = &raw[raw.find(m)? + m.len()..];
        Some((&rest[..rest.find('`')?], rest))
    });
    let Some((word, rest)) = unknown else {
        if message.contains("mapping values are not allowed") || message.contains("did not find expected key") {
            return (
                message,
                format!("check the indentation of this line and the one before; correct the YAML of this {what}"),
            );
        }
        return (message, format!("correct the YAML of this {what}"));
    };
    // The names after "expected": `a`, `b` or `c`.
    let expected = rest.split_once("expected").map_or("", |(_, e)| e);
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    // Under `parameters`, `Password: {s3cret}` is a value the YAML reads as a one-key
    // flow map: its "field" may be a secret, so it is neither echoed nor spelled against
    // the source keys.
    let written = line_text.split_once(':').map_or("", |(_, v)| v.split(" #").next().unwrap_or("").trim());
    let bare_flow_map =
        written.strip_prefix('{').and_then(|v| v.strip_suffix('}')).is_some_and(|v| !v.contains([':', ',']));
    if raw.starts_with("parameters.") && message.contains("unknown field") && bare_flow_map {
        let param = raw["parameters.".len()..].split([':', '.']).next().unwrap_or("");
        return (
            format!("parameters.{param}: a value written as a YAML flow map (`{{...}}`), which YAML reads as a source with an unknown key"),
            format!("quote the value: `{param}: \"{{...}}\"`"),
        );
    }
    if let Some(meant) = suggest::nearest(word, candidates.iter().copied()) {
        return (format!("{message} (did you mean `{meant}`?)"), format!("correct the spelling: `{meant}`"));
    }
    // Parameter keys are PascalCase (`HostName`), descriptor fields camelCase.
    if message.starts_with("unknown field")
        && what == "Connection"
        && word.starts_with(|c: char| c.is_ascii_uppercase())
    {
        return (
            message,
            "it is not a descriptor field; if it is a parameter, it may belong under `parameters` \
             (indent it like the parameters there); else remove it"
                .to_owned(),
        );
    }
    (message, format!("remove the key, or correct its spelling; see the {what} format in the README"))
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
        // Flow style (`{kind: Connection, ...}`): ask the parser, for `kind` alone, so
        // that nothing else (a number too large for a YAML integer) stops it.
        #[derive(serde::Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        serde_yaml::from_str::<Kind>(doc.text).ok()?.kind
    })
}

/// The kinds of connd's own documents.
pub const KINDS: [&str; 3] = ["Connection", "Component", "File"];

/// What a file of connd documents contributes.
#[derive(Debug, Default)]
pub struct Documents {
    pub identities: Vec<(Identity, Origin)>,
    pub connections: Vec<Arc<Connection>>,
    /// `kind: File` documents.
    pub files: Vec<model::FileSpec>,
    /// Some document failed to parse: a reference to it would be a confusing second error.
    pub had_errors: bool,
    /// Descriptors with errors, by the name and id they give where those could be read:
    /// a reference to one of them is not reported again (its error is above).
    pub failed: Vec<FailedDescriptor>,
    /// A `kind: Component` document had errors: "which component is this" would repeat it.
    pub failed_identity: bool,
}

/// What could be read of a descriptor that has errors.
#[derive(Debug, Default, Clone)]
pub struct FailedDescriptor {
    pub name: Option<String>,
    pub id: Option<String>,
}

/// Reads one document of a file other than `component.yaml`.
pub fn connd_document(path: &Path, doc: &Document<'_>, out: &mut Documents, diags: &mut Diagnostics) {
    let before = diags.len();
    if refuse_deep(path, doc, diags) {
        out.had_errors = true;
        return;
    }
    let origin = Origin::at(path, doc.first_line);
    let kind = kind_of(doc);
    match kind.as_deref() {
        Some("Connection") => {
            if let Some(raw) = parse::<raw::ConnectionDoc>(path, doc, "Connection", diags) {
                if let Some(c) = connection(raw, path, doc, diags) {
                    out.connections.push(Arc::new(c));
                }
            }
            if diags.len() > before {
                out.failed.push(failed_descriptor(doc));
            }
        }
        Some("File") => {
            if let Some(raw) = parse::<raw::FileDoc>(path, doc, "File", diags) {
                out.files.extend(super::filespec::file_document(raw, path, doc, diags));
            }
        }
        Some("Component") => {
            if let Some(raw) = parse::<raw::ComponentDoc>(path, doc, "Component", diags) {
                let line = doc.line_of("name", 0).unwrap_or(doc.first_line);
                out.identities.push((Identity { project: raw.project, component: raw.name }, Origin::at(path, line)));
            }
            out.failed_identity |= diags.len() > before;
        }
        // Likely a descriptor with its kind mistyped or left out: what it names is
        // explained here, not again by the references to it.
        Some(other) => {
            diags.error(
                origin,
                format!("unknown kind {other:?}{}", suggest::did_you_mean(other, KINDS)),
                "use `kind: Connection`, `kind: Component` or `kind: File`; the component's own config belongs in component.yaml",
            );
            out.failed.push(failed_descriptor(doc));
        }
        None => {
            diags.error(
                origin,
                "document has no `kind`",
                "add `kind: Connection` or `kind: Component` as its first line",
            );
            out.failed.push(failed_descriptor(doc));
        }
    }
    out.had_errors |= diags.len() > before;
}

/// The `name` and `id` of a descriptor that failed, read leniently.
fn failed_descriptor(doc: &Document<'_>) -> FailedDescriptor {
    /// Only these two fields, so that whatever else is wrong does not stop the read.
    #[derive(serde::Deserialize)]
    struct Names {
        name: Option<String>,
        id: Option<String>,
    }
    match serde_yaml::from_str::<Names>(doc.text) {
        Ok(n) => FailedDescriptor { name: n.name, id: n.id.and_then(|id| parse_uuid(&id)) },
        // Not even YAML: the top-level `name:` and `id:` lines, as written.
        Err(_) => {
            let line = |key: &str| {
                let prefix = format!("{key}:");
                let v = doc.text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
                Some(v.split(" #").next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned())
            };
            FailedDescriptor { name: line("name"), id: line("id").and_then(|id| parse_uuid(&id)) }
        }
    }
}

/// Checks one descriptor section by section; `None` when any check failed.
fn connection(raw: raw::ConnectionDoc, path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> Option<Connection> {
    let at = |key: &str| Origin::at(path, doc.line_of(key, 0).unwrap_or(doc.first_line));
    let before = diags.len();
    let id = descriptor_names(&raw, &at, diags);
    let owner = owner(&raw, &at, diags);
    let resource_ref = raw.resource_ref.as_deref().and_then(|text| {
        let parsed = parse_resource_ref(text);
        if parsed.is_none() {
            diags.error(at("resourceRef"), format!("resourceRef {text:?} is not valid"), RESOURCE_REF_GRAMMAR);
        }
        parsed
    });
    let parameters = parameters(raw.parameters, path, doc, diags);
    let oauth = oauth(&raw.name, raw.security, raw.oauth, &parameters, &at, diags);
    let proxy_headers = proxy_headers(&raw.name, raw.security, &parameters, raw.proxy, &at, diags);
    if diags.len() > before {
        return None;
    }
    Some(Connection {
        id: id?,
        name: raw.name,
        project: raw.project,
        visibility: raw.visibility.unwrap_or(model::Visibility::Project),
        owner,
        resource_ref,
        security: raw.security,
        oauth,
        parameters,
        proxy_headers,
        origin: at("name"),
    })
}

/// `id`, `name` and `project`; returns the id, lower-cased, when it is a UUID.
fn descriptor_names(raw: &raw::ConnectionDoc, at: &impl Fn(&str) -> Origin, diags: &mut Diagnostics) -> Option<String> {
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
    id
}

/// `visibility` and `component`: the owner, set exactly for a component connection.
fn owner(raw: &raw::ConnectionDoc, at: &impl Fn(&str) -> Origin, diags: &mut Diagnostics) -> Option<String> {
    match (raw.visibility.unwrap_or(model::Visibility::Project), &raw.component) {
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
        (_, owner) => owner.clone(),
    }
}

/// `parameters`: each with its source, its text as written, and its line.
fn parameters(
    raw: raw::Params,
    path: &Path,
    doc: &Document<'_>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Parameter> {
    let mut out = BTreeMap::new();
    // The text of plain scalars YAML typed (`Port: 5432`), read only when one is there.
    let mut typed_texts: Option<HashMap<String, String>> = None;
    for (key, param) in raw.0 {
        // Lines are looked up only when needed: the scan is the costly part of a valid load.
        let origin = || Origin::at(path, doc.line_of_under("parameters", &key).unwrap_or(doc.first_line));
        if key == model::ACCESS_TOKEN {
            diags.error(
                origin(),
                "AccessToken is the token connd obtains for OAuth connections; it cannot be a parameter",
                "remove it, and set `security: oauth2` with ConsumerKey, ConsumerSecret and TokenURL",
            );
            continue;
        }
        let param = match param {
            raw::Param::Typed => {
                let texts = typed_texts.get_or_insert_with(|| scalar::plain_texts(doc.text, "parameters"));
                match texts.remove(&key) {
                    Some(text) => raw::Param::Plain(text),
                    None => {
                        diags.error(
                            origin(),
                            format!("parameter {key} is a number or boolean whose exact text connd cannot read here"),
                            "quote it (`\"...\"`), so that it is the text as written",
                        );
                        continue;
                    }
                }
            }
            param => param,
        };
        if let Some(p) = parameter(&key, param, path, origin, diags) {
            out.insert(key, p);
        }
    }
    out
}

/// `security` and `oauth`: the OAuth settings, set exactly for `security: oauth2`.
fn oauth(
    name: &str,
    security: model::Security,
    oauth: Option<raw::OAuth>,
    parameters: &BTreeMap<String, Parameter>,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Option<model::OAuth> {
    match (security, oauth) {
        (model::Security::OAuth2, oauth) => {
            Some(super::oauth::settings(name, oauth.unwrap_or_default(), parameters, at, diags))
        }
        (_, Some(_)) => {
            diags.error(
                at("oauth"),
                format!("connection {name:?} has `oauth` settings but is not `security: oauth2`"),
                "set `security: oauth2`, or remove `oauth`",
            );
            None
        }
        (_, None) => None,
    }
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
    let default_secret = model::secret_by_default(key);
    let spec = match param {
        raw::Param::Plain(value) => {
            return Some(Parameter { source: Source::Value(value.into()), secret: default_secret, origin: origin() })
        }
        // Resolved to `Plain` by `parameters`.
        raw::Param::Typed => return None,
        raw::Param::Spec(spec) => spec,
    };
    let mut sources = Vec::new();
    if let Some(v) = spec.value {
        sources.push(Source::Value(v.0.into()));
    }
    if let Some(f) = spec.file {
        // A relative path is taken from the config directory, so a directory can carry
        // its own files (a ConfigMap mounts them beside the YAML).
        let dir = file.parent().unwrap_or(Path::new("."));
        sources.push(Source::File(dir.join(f)));
    }
    if spec.remote.unwrap_or(false) {
        sources.push(Source::ControlPlane);
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
    Some(Parameter { source: sources.remove(0), secret: spec.secret.unwrap_or(default_secret), origin: origin() })
}

/// Reads `component.yaml`, section by section.
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
    let path = &file.path;
    if refuse_deep(path, doc, diags) {
        return None;
    }
    let raw = parse::<raw::ComponentYaml>(path, doc, "component.yaml", diags);
    // After the parse, which refuses alias bombs: this reads the document a second time.
    // Also when the parse failed: a typo of a required key (`connectionConfg`) is said
    // as a typo beside the "missing field" error it causes.
    typo_warnings(path, doc, diags);
    let raw = raw?;
    let before = diags.len();
    let lines = doc.entry_lines();
    let schema_version = schema_version(raw.schema_version, path, doc, diags);
    let connection_refs = connection_references(raw.dependencies.connection_references, path, &lines, diags);
    let service_refs = service_references(raw.dependencies.service_references, path, &lines, diags);
    if raw.configurations.is_some() && raw.configuration.is_some() {
        diags.error(
            Origin::at(path, doc.line_of("configuration", 0).unwrap_or(doc.first_line)),
            "component.yaml has both `configurations` and `configuration`",
            "keep one: `configurations` is the current spelling",
        );
    }
    let configurations = raw.configurations.or(raw.configuration).unwrap_or_default();
    let env = env_entries(configurations.env, path, &lines, diags);
    let files = if configurations.file.is_empty() {
        Vec::new()
    } else {
        super::filespec::component_files(configurations.file, path, doc, diags)
    };
    let spec = ComponentSpec { schema_version: schema_version.to_owned(), connection_refs, service_refs, env, files };
    (diags.len() == before).then_some(spec)
}

/// `schemaVersion`, normalised to `1.0`, `1.1` or `1.2` (empty when it is not one).
fn schema_version(raw: Option<raw::Scalar>, path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> &'static str {
    let written = raw.map(|s| s.0).unwrap_or_default();
    let normalised = match written.as_str() {
        "1" | "1.0" => "1.0",
        "1.1" => "1.1",
        "1.2" => "1.2",
        _ => "",
    };
    if normalised.is_empty() {
        let line = doc.line_of("schemaVersion", 0).unwrap_or(doc.first_line);
        let what =
            if written.is_empty() { "no schemaVersion".to_owned() } else { format!("schemaVersion {written:?}") };
        diags.error(
            Origin::at(path, line),
            format!("component.yaml has {what}"),
            "set `schemaVersion: 1.2` (connd reads 1.0, 1.1 and 1.2)",
        );
    }
    normalised
}

/// `dependencies.connectionReferences`.
fn connection_references(
    raw: Vec<raw::ConnectionReference>,
    path: &Path,
    lines: &EntryLines<'_>,
    diags: &mut Diagnostics,
) -> Vec<model::ConnectionRef> {
    let mut out = Vec::new();
    for r in raw {
        let origin = Origin::at(path, lines.line("name", &r.name));
        if !valid_name(&r.name) {
            diags.error(
                origin.clone(),
                format!("connection reference name {:?} breaks the naming rule", r.name),
                NAME_RULE,
            );
        }
        match parse_resource_ref(&r.resource_ref) {
            Some(resource_ref) => out.push(model::ConnectionRef { name: r.name, resource_ref, origin }),
            None => diags.error(
                Origin::at(path, lines.line("resourceRef", &r.resource_ref)),
                format!("resourceRef {:?} of connection reference {:?} is not valid", r.resource_ref, r.name),
                RESOURCE_REF_GRAMMAR,
            ),
        }
    }
    out
}

/// `dependencies.serviceReferences` (legacy): only the mapped keys are injected.
fn service_references(
    raw: Vec<raw::ServiceReference>,
    path: &Path,
    lines: &EntryLines<'_>,
    diags: &mut Diagnostics,
) -> Vec<model::ServiceRef> {
    let mut out = Vec::new();
    for r in raw {
        let origin = Origin::at(path, lines.line("name", &r.name));
        let Some(connection_id) = parse_uuid(&r.connection_config) else {
            diags.error(
                Origin::at(path, lines.line("connectionConfig", &r.connection_config)),
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
                    Origin::at(path, lines.line("to", &m.to)),
                    format!("{:?} is not a valid environment variable name", m.to),
                    "use letters, digits and '_', not starting with a digit",
                );
            }
        }
        out.push(model::ServiceRef { name: r.name, connection_id, env, origin });
    }
    out
}

/// `configurations.env` (or `configuration.env`).
fn env_entries(
    raw: Vec<raw::EnvEntry>,
    path: &Path,
    lines: &EntryLines<'_>,
    diags: &mut Diagnostics,
) -> Vec<model::EnvEntry> {
    let mut out = Vec::new();
    for e in raw {
        let origin = Origin::at(path, lines.line("name", &e.name));
        if !valid_env_name(&e.name) {
            diags.error(
                origin,
                format!("{:?} is not a valid environment variable name", e.name),
                "use letters, digits and '_', not starting with a digit",
            );
            continue;
        }
        let Some(value) =
            super::filespec::value_source(&format!("variable {}", e.name), e.value, e.value_from, &origin, diags)
        else {
            continue;
        };
        out.push(model::EnvEntry { name: e.name, value, origin });
    }
    out
}

/// The keys connd reads at each place of `component.yaml` (list items take their list's
/// place); empty where connd reads nothing and so has nothing to compare with.
fn keys_read_at(place: &[&str]) -> &'static [&'static str] {
    match place {
        [] => &["schemaVersion", "dependencies", "configurations", "configuration"],
        ["dependencies"] => &["connectionReferences", "serviceReferences"],
        ["dependencies", "connectionReferences"] => &["name", "resourceRef"],
        ["dependencies", "serviceReferences"] => &["name", "connectionConfig", "env"],
        ["dependencies", "serviceReferences", "env"] => &["from", "to"],
        ["configurations" | "configuration"] => &["env", "file"],
        ["configurations" | "configuration", "env"] => &["name", "value", "valueFrom"],
        ["configurations" | "configuration", "env", "valueFrom"] => &["connectionRef", "configGroupRef", "configForm"],
        ["configurations" | "configuration", "env", "valueFrom", "connectionRef"] => &["name", "key"],
        ["configurations" | "configuration", "file"] => &["name", "mountPath", "type", "values"],
        ["configurations" | "configuration", "file", "values"] => &["name", "value", "valueFrom"],
        _ => &[],
    }
}

/// Warns on every key one edit away from a key connd reads at that place (docs/config.md):
/// `component.yaml` accepts keys it does not know, so `dependancies:` or `envs:` would
/// otherwise drop variables without a word.
fn typo_warnings(path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) {
    /// Where the next search for a key's line starts (document-relative), per key: the
    /// walk goes in document order, so a typo written twice is found at each line.
    type From<'a> = std::collections::HashMap<&'a str, usize>;
    fn walk<'a>(
        value: &'a serde_yaml::Value,
        place: &mut Vec<&'a str>,
        from: &mut From<'a>,
        path: &Path,
        doc: &Document<'_>,
        diags: &mut Diagnostics,
    ) {
        match value {
            serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| walk(v, place, from, path, doc, diags)),
            serde_yaml::Value::Mapping(map) => {
                let known = keys_read_at(place);
                for (key, value) in map {
                    let Some(key) = key.as_str() else { continue };
                    if known.contains(&key) {
                        place.push(key);
                        walk(value, place, from, path, doc, diags);
                        place.pop();
                    } else if let Some(meant) = known.iter().find(|k| suggest::one_edit(key, k)) {
                        let under =
                            if place.is_empty() { String::new() } else { format!(" under `{}`", place.join(".")) };
                        let start = from.entry(key).or_default();
                        let line = doc.line_of(key, *start);
                        if let Some(line) = line {
                            *start = line - doc.first_line + 1;
                        }
                        diags.warn(
                            Origin::at(path, line.unwrap_or(doc.first_line)),
                            format!("`{key}`{under} is not a key connd reads, and is ignored: did you mean `{meant}`?"),
                            format!("rename it to `{meant}`"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(doc.text) {
        walk(&value, &mut Vec::new(), &mut From::new(), path, doc, diags);
    }
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

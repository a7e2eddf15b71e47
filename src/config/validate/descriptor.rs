//! A connection descriptor (`kind: Connection`), section by section: names and id,
//! owner, parameters and their sources, OAuth, `proxy.headers` and `proxy.port`.

use super::names::{parse_resource_ref, parse_uuid, valid_name, NAME_RULE, RESOURCE_REF_GRAMMAR};
use crate::config::diag::{Diagnostics, Origin};
use crate::config::files::{Document, KeyLines};
use crate::config::model::{self, Connection, Parameter, Source};
use crate::config::{raw, scalar};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Checks one descriptor section by section; `None` when any check failed.
pub(super) fn connection(
    raw: raw::ConnectionDoc,
    path: &Arc<Path>,
    doc: &Document<'_>,
    diags: &mut Diagnostics,
) -> Option<Connection> {
    let lines = doc.key_lines();
    let at = |key: &str| Origin::shared(path, lines.line_of(key, 0).unwrap_or(doc.first_line));
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
    let parameters = parameters(raw.parameters, path, doc, &lines, diags);
    let oauth = oauth(&raw.name, raw.security, raw.oauth, &parameters, &at, diags);
    let (headers, port) = raw.proxy.map_or_else(Default::default, |p| (p.headers, p.port));
    // A header's own line, else (a flow map such as `proxy: { headers: { X-Key: Key } }`)
    // the line of `headers`, else of `proxy`.
    let header_at = |name: &str| {
        let headers = lines.line_of_under("proxy", "headers");
        let own = headers.and_then(|h| lines.line_of(name, h + 1 - doc.first_line));
        let line = own.or(headers).or_else(|| lines.line_of("proxy", 0)).unwrap_or(doc.first_line);
        Origin::at(path, line)
    };
    let proxy_headers = proxy_headers(&raw.name, raw.security, &parameters, headers, &header_at, diags);
    let proxy_port = port.and_then(|port| proxy_port(&raw.name, port, path, doc, diags));
    if let Some(p) = proxy_port.as_ref().filter(|_| !model::offers(raw.security, &parameters, "ServiceURL")) {
        diags.error(
            p.origin.clone(),
            format!(
                "connection {:?} has a proxy port ({}) but no ServiceURL: the port serves HTTP to the connection's ServiceURL",
                raw.name, p.port
            ),
            "remove `proxy.port` (a connection without a ServiceURL, a database say, is read from its variables), or add a ServiceURL parameter",
        );
    }
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
        proxy_port,
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
    path: &Arc<Path>,
    doc: &Document<'_>,
    lines: &KeyLines<'_>,
    diags: &mut Diagnostics,
) -> model::Parameters {
    // In key order already (`raw::Params` is a map), so collected as it comes.
    let mut out = Vec::with_capacity(raw.0.len());
    // The text of plain scalars YAML typed (`Port: 5432`), read only when one is there.
    let mut typed_texts: Option<HashMap<String, String>> = None;
    for (key, param) in raw.0 {
        let origin = || Origin::shared(path, lines.line_of_under("parameters", &key).unwrap_or(doc.first_line));
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
            out.push((key, p));
        }
    }
    out.into_iter().collect()
}

/// `security` and `oauth`: the OAuth settings, set exactly for `security: oauth2`.
fn oauth(
    name: &str,
    security: model::Security,
    oauth: Option<raw::OAuth>,
    parameters: &model::Parameters,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Option<model::OAuth> {
    match (security, oauth) {
        (model::Security::OAuth2, oauth) => {
            Some(crate::config::oauth::settings(name, oauth.unwrap_or_default(), parameters, at, diags))
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
    parameters: &model::Parameters,
    headers: BTreeMap<String, String>,
    at: &dyn Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Vec<model::ProxyHeader> {
    let mut out: Vec<model::ProxyHeader> = Vec::new();
    for (name, key) in headers {
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

/// `proxy.port`: a TCP port, 1 to 65535, as a number (or digits quoted). Whether another
/// connection claims it too is the directory's question (`config::load`).
fn proxy_port(
    connection: &str,
    spec: raw::PortSpec,
    path: &Path,
    doc: &Document<'_>,
    diags: &mut Diagnostics,
) -> Option<model::ProxyPort> {
    // In a one-line flow map (`proxy: { port: 15001 }`) the key is on `proxy`'s line.
    let proxy_line = doc.line_of("proxy", 0);
    let on_proxy_line =
        proxy_line.and_then(|l| doc.text.lines().nth(l - doc.first_line)).is_some_and(|text| text.contains("port:"));
    let line = if on_proxy_line { proxy_line } else { doc.line_of_under("proxy", "port").or(proxy_line) };
    let origin = Origin::at(path, line.unwrap_or(doc.first_line));
    // A number's text as written (`15001.0`, `1.5e4`); quoted digits are judged as the
    // same number unquoted would be.
    let (spec, text) = match spec {
        raw::PortSpec::Text(t) => (numeric(t.trim()).unwrap_or(raw::PortSpec::Text(t.clone())), t.trim().to_owned()),
        spec => {
            let written = scalar::plain_texts(doc.text, "proxy").remove("port");
            let text = written.unwrap_or_else(|| match &spec {
                raw::PortSpec::Number(n) => n.to_string(),
                raw::PortSpec::Negative(n) => n.to_string(),
                raw::PortSpec::Fraction(f) => format!("{f:?}"),
                raw::PortSpec::Huge | raw::PortSpec::Text(_) | raw::PortSpec::Other => String::new(),
            });
            (spec, text)
        }
    };
    let problem = match spec {
        raw::PortSpec::Number(n) => match u16::try_from(n) {
            Ok(0) => "0, which asks the system for any free port: the workload could not know it".to_owned(),
            Ok(port) => return Some(model::ProxyPort { port, origin }),
            Err(_) => format!("{text}, over 65535"),
        },
        raw::PortSpec::Huge => format!("{text}, over 65535"),
        raw::PortSpec::Text(text) => format!("{text:?}, not a port number"),
        raw::PortSpec::Negative(_) => format!("{text}, not a port number"),
        raw::PortSpec::Fraction(_) => format!("{text} (a float); write a whole number"),
        raw::PortSpec::Other => "not a number".to_owned(),
    };
    diags.error(
        origin,
        format!("proxy port of connection {connection:?} is {problem}"),
        "give a TCP port from 1 to 65535 that no other connection uses, e.g. `proxy: { port: 15001 }`",
    );
    None
}

/// Quoted text read as the number it spells, if it spells one (`"65536"` as 65536).
fn numeric(text: &str) -> Option<raw::PortSpec> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(raw::PortSpec::Number(n));
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(raw::PortSpec::Negative(n));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(if text.starts_with('-') { raw::PortSpec::Negative(i64::MIN) } else { raw::PortSpec::Huge });
    }
    let looks_numeric = text.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'.');
    text.parse::<f64>().ok().filter(|f| looks_numeric && f.is_finite()).map(raw::PortSpec::Fraction)
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

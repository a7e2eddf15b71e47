//! From a planned file and the resolved values to the file's bytes (docs/files.md). JSON is
//! serde_json's, TOML the `toml` crate's, dotenv `dotenv::dotenv_quote`'s, templates
//! minijinja's in strict mode; YAML is written with every scalar double-quoted (see
//! `yaml_block`) and `.properties` escaped to `java.util.Properties.load`'s grammar
//! (see [`properties_escape`]), where the crates at hand get strings wrong. Every value is a string and stays the text it
//! was (`1.10` is `"1.10"`, never a number); dotted names nest in yaml, json and toml.
//! Templates are `template`'s, bounded: [`FUEL`] instructions and [`MAX_OUTPUT`] bytes.

use super::{Content, PlannedFile, PlannedValue, ValueFrom};
use crate::config::model::FileFormat;
use crate::resolve::Plan;
use crate::secret::Secret;
use crate::source::values::Values;
pub use crate::template::{template, Inputs, RenderError, Rendered, FUEL, MAX_OUTPUT};
use minijinja::value::Value;
use std::fmt::Write as _;

/// Renders the files of one plan from one set of values; what templates see is built
/// once, on the first template, and shared by the rest.
pub struct Batch<'a> {
    plan: &'a Plan,
    values: &'a Values,
    inputs: std::cell::OnceCell<Inputs>,
}

impl<'a> Batch<'a> {
    pub fn new(plan: &'a Plan, values: &'a Values) -> Batch<'a> {
        Batch { plan, values, inputs: std::cell::OnceCell::new() }
    }

    /// The rendered bytes of `file`, one of the plan's.
    pub fn render(&self, file: &PlannedFile) -> Result<Vec<u8>, RenderError> {
        render(file, self.plan, self.values, || self.inputs.get_or_init(|| real_inputs(self.plan, self.values)))
    }
}

fn render<'i>(
    file: &PlannedFile,
    plan: &Plan,
    values: &Values,
    inputs: impl FnOnce() -> &'i Inputs,
) -> Result<Vec<u8>, RenderError> {
    let out = match &file.content {
        Content::Values(entries) => {
            let resolved = entries
                .iter()
                .map(|v| Ok((v.name.as_str(), value_of(v, plan, values)?)))
                .collect::<Result<Vec<(&str, &Secret)>, RenderError>>()?;
            structured(file.format, &resolved)?
        }
        Content::Template(t) => {
            let text = template(&t.text, t.first_line, inputs())?.text;
            if text.contains('\0') {
                return Err(RenderError::new(
                    "the rendered template holds a NUL byte (from a value), which a text file cannot hold",
                    "remove the NUL byte from the value, or leave that value out of the template",
                ));
            }
            text.into_bytes()
        }
    };
    if out.len() > MAX_OUTPUT {
        return Err(RenderError::new(
            format!("the rendered file is {} bytes, over the limit of {MAX_OUTPUT} bytes", out.len()),
            "render less into one file",
        ));
    }
    Ok(out)
}

fn value_of<'a>(v: &'a PlannedValue, plan: &Plan, values: &'a Values) -> Result<&'a Secret, RenderError> {
    match &v.from {
        ValueFrom::Literal(s) => Ok(s),
        ValueFrom::Param { conn, key } => values.connections.get(*conn).and_then(|c| c.get(key)).ok_or_else(|| {
            let name = plan.connections.get(*conn).map_or("?", |c| c.name.as_str());
            RenderError {
                line: v.line,
                message: format!("no value for {key} of connection {name:?}"),
                fix: if key == crate::config::model::ACCESS_TOKEN {
                    "the token endpoint gave no access token; see the error above".to_owned()
                } else {
                    "give the parameter a value".to_owned()
                },
            }
        }),
    }
}

/// Renders name/value pairs (names already checked for the format) in a format other
/// than `template`.
pub fn structured(format: FileFormat, values: &[(&str, &Secret)]) -> Result<Vec<u8>, RenderError> {
    let nul = |name: &str| {
        RenderError::new(
            format!("value {name} holds a NUL byte, which a {} file cannot hold", format.as_str()),
            "remove the NUL byte from the value, or use json, yaml, toml or properties",
        )
    };
    let text = match format {
        FileFormat::Json => {
            let mut root = serde_json::Map::new();
            for (name, value) in values {
                let (table, leaf) = nest_json(&mut root, name);
                table.insert(leaf.to_owned(), serde_json::Value::String(value.expose().to_owned()));
            }
            let mut text = serde_json::to_string_pretty(&root).map_err(|e| RenderError::new(e.to_string(), ""))?;
            text.push('\n');
            text
        }
        FileFormat::Yaml => {
            let mut root = serde_json::Map::new();
            for (name, value) in values {
                let (table, leaf) = nest_json(&mut root, name);
                table.insert(leaf.to_owned(), serde_json::Value::String(value.expose().to_owned()));
            }
            let mut out = String::new();
            if root.is_empty() {
                out.push_str("{}\n");
            }
            yaml_block(&mut out, &root, 0);
            out
        }
        FileFormat::Toml => {
            let mut root = toml::Table::new();
            for (name, value) in values {
                let (table, leaf) = nest_toml(&mut root, name);
                table.insert(leaf.to_owned(), toml::Value::String(value.expose().to_owned()));
            }
            toml::to_string(&root).map_err(|e| RenderError::new(e.to_string(), ""))?
        }
        FileFormat::Dotenv => {
            let mut out = String::new();
            for (name, value) in values {
                if value.expose().contains('\0') {
                    return Err(nul(name));
                }
                let _ = writeln!(out, "{name}={}", crate::dotenv::dotenv_quote(value.expose()));
            }
            out
        }
        FileFormat::Properties => {
            let mut out = String::new();
            for (name, value) in values {
                properties_escape(&mut out, name, true);
                out.push('=');
                properties_escape(&mut out, value.expose(), false);
                out.push('\n');
            }
            out
        }
        FileFormat::Template => return Err(RenderError::new("a template file has no values", "")),
    };
    Ok(text.into_bytes())
}

/// The table a dotted name's last part goes into, created on the way, and that part.
/// Validation made sure no name is both a value and a table.
fn nest_json<'a, 'n>(
    mut table: &'a mut serde_json::Map<String, serde_json::Value>,
    name: &'n str,
) -> (&'a mut serde_json::Map<String, serde_json::Value>, &'n str) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap_or(name);
    for part in parts {
        let entry = table.entry(part.to_owned()).or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !entry.is_object() {
            *entry = serde_json::Value::Object(Default::default());
        }
        table = entry.as_object_mut().expect("made an object above");
    }
    (table, leaf)
}

/// A block mapping whose keys and string values are all double-quoted. serde_yaml_ng
/// leaves `on`, `yes`, `12:30`, `1_000` and `2001-12-14` plain, which YAML 1.1 readers
/// (SnakeYAML under Spring, PyYAML) take as booleans, numbers and dates; a double-quoted
/// scalar is a string in every YAML version.
fn yaml_block(out: &mut String, table: &serde_json::Map<String, serde_json::Value>, depth: usize) {
    for (key, value) in table {
        for _ in 0..depth {
            out.push_str("  ");
        }
        yaml_quoted(out, key);
        match value {
            serde_json::Value::Object(inner) => {
                out.push_str(":\n");
                yaml_block(out, inner, depth + 1);
            }
            serde_json::Value::String(s) => {
                out.push_str(": ");
                yaml_quoted(out, s);
                out.push('\n');
            }
            _ => out.push_str(": null\n"),
        }
    }
}

/// A YAML double-quoted scalar: JSON's escapes (a JSON string is one), plus `\uXXXX`
/// for what YAML reads as a line break (NEL, LS, PS) or refuses as unprintable (DEL,
/// C1 controls, BOM, U+FFFE/FFFF).
fn yaml_quoted(out: &mut String, text: &str) {
    let json = serde_json::Value::String(text.to_owned()).to_string();
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn nest_toml<'a, 'n>(mut table: &'a mut toml::Table, name: &'n str) -> (&'a mut toml::Table, &'n str) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap_or(name);
    for part in parts {
        let entry = table.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(Default::default()));
        if !entry.is_table() {
            *entry = toml::Value::Table(Default::default());
        }
        table = entry.as_table_mut().expect("made a table above");
    }
    (table, leaf)
}

/// Escapes `text` as `java.util.Properties.store` does, so that `Properties.load`
/// (either overload) reads it back exactly: `\`, `=`, `:`, `#`, `!`, tabs and line breaks
/// escaped, spaces escaped in keys and at the start of values, and everything outside
/// printable ASCII as `\uXXXX` UTF-16 units, so the file is the same in ISO-8859-1 and
/// UTF-8. (The `java-properties` crate writes `\u1f41e` for U+1F41E and `\u1` for U+0001,
/// which Java misreads.)
pub fn properties_escape(out: &mut String, text: &str, key: bool) {
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' if key || i == 0 => out.push_str("\\ "),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
}

/// What templates see when rendering for real: the values of `plan`'s connections and
/// variables.
fn real_inputs(plan: &Plan, values: &Values) -> Inputs {
    let connections = plan
        .connections
        .iter()
        .zip(&values.connections)
        .map(|(p, v)| (p.name.clone(), v.iter().map(|(k, s)| (k.clone(), Value::from(s.expose()))).collect()))
        .collect();
    let env = values.env.iter().map(|(k, v)| (k.clone(), Value::from(v.expose()))).collect();
    Inputs::new(connections, env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn inputs() -> Inputs {
        Inputs::placeholders(&[("db".into(), vec!["Password".into(), "HostName".into()])], &["LEVEL".into()])
    }

    #[test]
    fn templates_are_strict_and_name_what_is_missing() {
        let ok = template("{{ connections['db'].HostName }}:{{ env.LEVEL }}\n", 5, &inputs()).unwrap();
        assert_eq!(ok.text, "HostName-value:LEVEL-value\n");
        assert_eq!(ok.read, BTreeSet::from([(0, "HostName".to_owned())]));
        let e = template("a\n{{ connections['nope'].HostName }}", 5, &inputs()).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("connection \"nope\" is not referenced"), "{e:?}");
        let e = template("{{ connections.db.Port }}", 5, &inputs()).unwrap_err();
        assert!(e.message.contains("has no key \"Port\" (its keys: HostName, Password)"), "{e:?}");
        let e = template("{{ env.NOPE }}", 1, &inputs()).unwrap_err();
        assert!(e.message.contains("no variable \"NOPE\""), "{e:?}");
        let url = template("{{ 'p@ss:w/rd é' | urlencode }}", 1, &inputs()).unwrap();
        assert_eq!(url.text, "p%40ss%3Aw%2Frd%20%C3%A9");
        let e = template("{{ nope }}", 1, &inputs()).unwrap_err();
        assert!(e.message.contains("undefined"), "{e:?}");
    }

    #[test]
    fn templates_are_bounded() {
        let e = template("{% for x in [1] %}\nnever ends", 10, &inputs()).unwrap_err();
        assert!(e.message.contains("does not parse"), "{e:?}");
        let e =
            template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", 1, &inputs())
                .unwrap_err();
        assert!(e.message.contains("limit of"), "{e:?}");
        let e = template("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", 1, &inputs()).unwrap_err();
        assert!(e.message.contains("expands past"), "{e:?}");
    }

    #[test]
    fn properties_escaping() {
        let mut out = String::new();
        properties_escape(&mut out, "a b=c", true);
        out.push('=');
        properties_escape(&mut out, " x:y#\u{1}é\u{1F41E}\\", false);
        assert_eq!(out, "a\\ b\\=c=\\ x\\:y\\#\\u0001\\u00E9\\uD83D\\uDC1E\\\\");
    }

    #[test]
    fn values_stay_strings_and_names_nest() {
        let one = Secret::new("1.10");
        let yes = Secret::new("on");
        let vals = [("hr.serviceUrl", &one), ("hr.enabled", &yes), ("level", &yes)];
        let toml = String::from_utf8(structured(FileFormat::Toml, &vals).unwrap()).unwrap();
        assert_eq!(toml, "level = \"on\"\n\n[hr]\nenabled = \"on\"\nserviceUrl = \"1.10\"\n");
        let json = String::from_utf8(structured(FileFormat::Json, &vals).unwrap()).unwrap();
        assert!(json.contains("\"serviceUrl\": \"1.10\""), "{json}");
        let nul = Secret::new("a\0b");
        assert!(structured(FileFormat::Dotenv, &[("A", &nul)]).unwrap_err().message.contains("NUL"));
    }
}

//! The checks of the files of docs/files.md: `configurations.file[]` entries of component.yaml
//! (the platform's form) and `kind: File` documents, as written (`raw`), each checked on
//! its own into a [`FileSpec`] (`model`). What needs the rest of the directory (connections
//! and their keys, paths under `--files-root`, two entries for one path) is `fileplan`'s.

use super::diag::{Diagnostics, Origin};
use super::files::Document;
use super::model::{valid_env_name, Body, FileFormat, FileSpec, FileValue, ValueSource};
use super::raw::{self, FileDoc, RawComponentFile, RawValue};
use std::path::{Component, Path, PathBuf};

/// Files are `0600` unless a mode is given (docs/files.md).
pub const DEFAULT_MODE: u32 = 0o600;

/// The path as given, checked: absolute, no `..`, no empty name. `what` names the key.
fn checked_path(text: &str, what: &str, origin: &Origin, diags: &mut Diagnostics) -> Option<PathBuf> {
    let path = Path::new(text);
    if path.components().any(|c| c == Component::ParentDir) {
        diags.error(
            origin.clone(),
            format!("{what} {text:?} contains `..`"),
            "write the path without `..`: every file lands under --files-root",
        );
        return None;
    }
    if !path.is_absolute() {
        diags.error(
            origin.clone(),
            format!("{what} {text:?} is not absolute"),
            "write the path from /, e.g. /run/app/db.env",
        );
        return None;
    }
    if text.contains('\0') {
        diags.error(origin.clone(), format!("{what} contains a NUL byte"), "remove it from the path");
        return None;
    }
    let clean: PathBuf = path.components().filter(|c| *c != Component::CurDir).collect();
    Some(clean)
}

/// Parses a mode in octal (`0400`, `"0640"`, `400`).
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// A user or group by number or name; an error message when it does not exist here.
fn lookup(text: &str, group: bool) -> Result<u32, String> {
    let what = if group { "group" } else { "user" };
    if let Ok(id) = text.parse::<u32>() {
        return Ok(id);
    }
    let found = if group {
        nix::unistd::Group::from_name(text).map(|g| g.map(|g| g.gid.as_raw()))
    } else {
        nix::unistd::User::from_name(text).map(|u| u.map(|u| u.uid.as_raw()))
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!("no {what} named {text:?} exists on this machine")),
        Err(e) => Err(format!("cannot look up {what} {text:?}: {}", e.desc())),
    }
}

/// The values of a file: names checked for the format, duplicates and clashes found.
fn values(
    raw: Vec<RawValue>,
    format: FileFormat,
    doc: &Document<'_>,
    path: &Path,
    diags: &mut Diagnostics,
) -> Vec<FileValue> {
    let lines = doc.entry_lines();
    let mut out: Vec<FileValue> = Vec::with_capacity(raw.len());
    for v in raw {
        let origin = Origin::at(path, lines.line("name", &v.name));
        let name_ok = match format {
            FileFormat::Dotenv => valid_env_name(&v.name),
            _ if format.nests() => !v.name.is_empty() && v.name.split('.').all(|s| !s.is_empty()),
            _ => !v.name.is_empty() && !v.name.contains('\0'),
        };
        if !name_ok {
            let fix = match format {
                FileFormat::Dotenv => "use letters, digits and '_', not starting with a digit",
                _ => "give a non-empty name; in yaml, json and toml a dot separates nested keys (hr.serviceUrl)",
            };
            diags.error(origin, format!("{:?} is not a valid name for a {} file", v.name, format.as_str()), fix);
            continue;
        }
        let Some(source) = value_source(
            &format!("value {}", v.name),
            (v.value, v.value_from, v.connection_ref.is_some()),
            &origin,
            diags,
        ) else {
            continue;
        };
        // Two entries for one name, or a name that is both a value and a table.
        let clash = out.iter().find(|o| {
            o.name == v.name
                || (format.nests()
                    && (o.name.starts_with(&format!("{}.", v.name)) || v.name.starts_with(&format!("{}.", o.name))))
        });
        if let Some(first) = clash {
            let why = if first.name == v.name {
                "is given twice".to_owned()
            } else {
                format!("clashes with {:?}", first.name)
            };
            diags.error(
                origin,
                format!("value {} {why} (see {})", v.name, first.origin),
                "give each name once; a name cannot hold a value and nested keys at once",
            );
            continue;
        }
        out.push(FileValue { name: v.name, source, origin });
    }
    out
}

/// Checks the `configurations.file[]` entries of component.yaml.
/// The source of one entry that takes a literal `value` or a `valueFrom` (a variable of
/// `configurations.env`, a value of a file): exactly one of the two, and under `valueFrom`
/// exactly one of `connectionRef`, `configGroupRef`, `configForm`. `what` names the entry in
/// messages ("variable X", "value X"). `None` after reporting to `diags`.
/// `stray_ref`: a `connectionRef` was written beside `valueFrom` rather than under it.
pub fn value_source(
    what: &str,
    (value, value_from, stray_ref): (Option<raw::Scalar>, Option<raw::ValueFrom>, bool),
    origin: &Origin,
    diags: &mut Diagnostics,
) -> Option<ValueSource> {
    if stray_ref && value_from.as_ref().map_or(true, |f| f.connection_ref.is_none()) {
        diags.error(
            origin.clone(),
            format!(
                "{what}: `connectionRef` sits beside `valueFrom`, not under it, so `valueFrom` {}",
                if value_from.is_some() { "holds no connectionRef" } else { "is empty" }
            ),
            "indent `connectionRef:` and the lines under it two more spaces than `valueFrom:`",
        );
        return None;
    }
    match (value, value_from) {
        (Some(value), None) => Some(ValueSource::Literal(value.0)),
        (None, Some(from)) => {
            let mut kinds = Vec::new();
            if let Some(c) = from.connection_ref {
                kinds.push(ValueSource::ConnectionRef { name: c.name, key: c.key });
            }
            if from.config_group_ref.is_some() {
                kinds.push(ValueSource::Unsupported("configGroupRef"));
            }
            if from.config_form.is_some() {
                kinds.push(ValueSource::Unsupported("configForm"));
            }
            if kinds.len() != 1 {
                diags.error(
                    origin.clone(),
                    format!("{what} needs exactly one of connectionRef, configGroupRef or configForm under valueFrom"),
                    "keep one source under valueFrom",
                );
                return None;
            }
            kinds.pop()
        }
        _ => {
            diags.error(
                origin.clone(),
                format!("{what} needs exactly one of `value` or `valueFrom`"),
                "give a literal `value`, or a `valueFrom.connectionRef {name, key}`",
            );
            None
        }
    }
}

pub fn component_files(
    raw: Vec<RawComponentFile>,
    path: &Path,
    doc: &Document<'_>,
    diags: &mut Diagnostics,
) -> Vec<FileSpec> {
    let lines = doc.entry_lines();
    let mut out = Vec::new();
    for f in raw {
        let origin = Origin::at(path, lines.line("name", &f.name));
        let before = diags.len();
        let format = match f.format.as_deref().map(FileFormat::parse) {
            Some(Some(format)) if format.nests() => Some(format),
            Some(_) => {
                diags.error(
                    Origin::at(path, lines.line("type", f.format.as_deref().unwrap_or(""))),
                    format!("file {} has type {:?}", f.name, f.format.as_deref().unwrap_or("")),
                    "configurations.file takes type yaml, json or toml; write a `kind: File` document for dotenv, properties or a template",
                );
                None
            }
            None => {
                diags.error(
                    origin.clone(),
                    format!("file {} has no type", f.name),
                    "add `type: yaml`, `type: json` or `type: toml`",
                );
                None
            }
        };
        if f.name.is_empty() || f.name.contains('/') || f.name == "." || f.name == ".." {
            diags.error(
                origin.clone(),
                format!("file name {:?} is not a plain file name", f.name),
                "give the name only (Config.toml); the folder goes in mountPath",
            );
        }
        let mount = Origin::at(path, lines.line("mountPath", &f.mount_path));
        let folder = checked_path(&f.mount_path, "mountPath", &mount, diags);
        let (Some(format), Some(folder), true) = (format, folder, diags.len() == before) else { continue };
        let values = values(f.values, format, doc, path, diags);
        out.push(FileSpec {
            path: folder.join(&f.name),
            format,
            mode: DEFAULT_MODE,
            owner: None,
            group: None,
            body: Body::Values(values),
            origin,
            check_only: false,
        });
    }
    out
}

/// Checks one `kind: File` document.
pub fn file_document(raw: FileDoc, path: &Path, doc: &Document<'_>, diags: &mut Diagnostics) -> Option<FileSpec> {
    let at = |key: &str| Origin::at(path, doc.line_of(key, 0).unwrap_or(doc.first_line));
    let before = diags.len();
    let target = checked_path(&raw.path, "path", &at("path"), diags);
    let format = file_format(&raw.format, &at, diags);
    let mode = file_mode(raw.mode.as_ref().map(|m| m.0.as_str()), &at, diags);
    let [owner, group] = owners([&raw.owner, &raw.group].map(|v| v.as_ref().map(|v| v.0.as_str())), &at, diags);
    let body = format.and_then(|format| file_body(format, raw.values, raw.template, path, doc, &at, diags));
    let check_only = diags.len() > before;
    Some(FileSpec {
        path: if check_only { PathBuf::from(raw.path.as_str()) } else { target? },
        format: format?,
        mode: mode.unwrap_or(DEFAULT_MODE),
        owner,
        group,
        body: body?,
        origin: at("path"),
        check_only,
    })
}

/// `format`, one of those connd renders.
fn file_format(text: &str, at: &impl Fn(&str) -> Origin, diags: &mut Diagnostics) -> Option<FileFormat> {
    let format = FileFormat::parse(text);
    if format.is_none() {
        diags.error(
            at("format"),
            format!(
                "unknown file format {:?}{}",
                text,
                super::suggest::did_you_mean(text, ["yaml", "json", "toml", "dotenv", "properties", "template"])
            ),
            "use yaml, json, toml, dotenv, properties or template",
        );
    }
    format
}

/// `mode`, octal; the default when not given.
fn file_mode(text: Option<&str>, at: &impl Fn(&str) -> Origin, diags: &mut Diagnostics) -> Option<u32> {
    let Some(text) = text else { return Some(DEFAULT_MODE) };
    let mode = parse_mode(text);
    if mode.is_none() {
        diags.error(at("mode"), "mode is not an octal file mode", "write it in octal and quoted, e.g. mode: \"0400\"");
    }
    mode
}

/// `owner` and `group` as ids: each must exist, and differ from connd's own only when
/// connd runs as root.
fn owners(given: [Option<&str>; 2], at: &impl Fn(&str) -> Origin, diags: &mut Diagnostics) -> [Option<u32>; 2] {
    let root = nix::unistd::geteuid().is_root();
    let mut ids = [None, None];
    for (i, (key, value)) in ["owner", "group"].into_iter().zip(given).enumerate() {
        let Some(value) = value else { continue };
        match lookup(value, i == 1) {
            Ok(id) => ids[i] = Some(id),
            Err(why) => {
                diags.error(at(key), why, format!("name an existing {key} (a number or a name), or remove `{key}`"));
                continue;
            }
        }
        let own = if i == 0 { nix::unistd::geteuid().as_raw() } else { nix::unistd::getegid().as_raw() };
        if !root && ids[i] != Some(own) {
            diags.error(
                at(key),
                format!("`{key}` is set, but connd does not run as root and so cannot give files away"),
                format!("run connd as root to set `{key}`, or remove it (files are then connd's own)"),
            );
        }
    }
    ids
}

/// The file's content: a template for `format: template`, values for the others.
fn file_body(
    format: FileFormat,
    values: Option<Vec<RawValue>>,
    template: Option<String>,
    path: &Path,
    doc: &Document<'_>,
    at: &impl Fn(&str) -> Origin,
    diags: &mut Diagnostics,
) -> Option<Body> {
    match (format, values, template) {
        (FileFormat::Template, None, Some(text)) => {
            // The text of a block scalar starts on the line after `template: |`.
            let first_line = doc.line_of("template", 0).map_or(doc.first_line, |l| template_start(doc, l));
            Some(Body::Template { text, first_line })
        }
        (FileFormat::Template, _, _) => {
            diags.error(
                at("format"),
                "a template file needs `template:` and no `values:`",
                "write the file's text under `template: |`",
            );
            None
        }
        (format, Some(values), None) => Some(Body::Values(self::values(values, format, doc, path, diags))),
        (format, _, _) => {
            diags.error(
                at("format"),
                format!("a {} file needs `values:` and no `template:`", format.as_str()),
                "list the values under `values:` (name plus value or valueFrom), or use format: template",
            );
            None
        }
    }
}

/// The line a template's text starts on, `key_line` being its `template:` line: the next
/// line for a block scalar (`template: |`), that line itself for a scalar written on it
/// (`template: "{{ ... }}"`).
fn template_start(doc: &Document<'_>, key_line: usize) -> usize {
    let text = doc.text.lines().nth(key_line.saturating_sub(doc.first_line)).unwrap_or("");
    let value = text.split_once(':').map_or("", |(_, v)| v).trim_start();
    let block = value.is_empty() || value.starts_with(['|', '>', '#']);
    if block {
        key_line + 1
    } else {
        key_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0400"), Some(0o400));
        assert_eq!(parse_mode("640"), Some(0o640));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("rw"), None);
        assert_eq!(parse_mode("77777"), None);
    }

    #[test]
    fn paths() {
        let mut d = Diagnostics::default();
        let o = Origin::file("x");
        assert_eq!(checked_path("/a/./b", "path", &o, &mut d), Some(PathBuf::from("/a/b")));
        assert!(checked_path("../../etc", "path", &o, &mut d).is_none());
        assert!(checked_path("/run/../etc", "path", &o, &mut d).is_none());
        assert!(checked_path("rel/x", "path", &o, &mut d).is_none());
        assert_eq!(d.len(), 3);
    }
}

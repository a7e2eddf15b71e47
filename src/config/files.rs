//! Reads the connection-config directory as a Kubernetes ConfigMap volume mounts it:
//! a flat folder whose visible entries may be symlinks into a `..data/` folder that the
//! kubelet swaps atomically. Hidden names (`.`-prefixed, `..data` included) are skipped,
//! every `*.yaml` / `*.yml` is read whole, bounded in size and checked to be UTF-8, and
//! split into YAML documents that remember their first line. Parsing is elsewhere.
//! The `file:` sources of parameters are read here too ([`read_value_file`]), by the
//! same rules for planning (`resolve` checks them) and for values (`source::values`).

use super::diag::{Diagnostics, Origin};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file larger than this is refused: a ConfigMap holds at most 1 MiB, and a directory
/// provisioned by hand has no reason to come near this.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The component's own source config, in the platform's format.
pub const COMPONENT_FILE: &str = "component.yaml";

/// A name often written for it, which connd does not take for it.
pub const COMPONENT_FILE_YML: &str = "component.yml";

/// Whether `file` is the component's config under another name: `component.yml`, or a
/// name one edit or a case away from `component.yaml` (`Component.yaml`, `componet.yaml`)
/// that holds no `kind:` document (a file of that name with kinds is connd's own).
pub fn misnamed_component(file: &SourceFile) -> bool {
    if file.name == COMPONENT_FILE || file.name == COMPONENT_FILE_YML {
        return file.name == COMPONENT_FILE_YML;
    }
    let name = file.name.to_lowercase();
    let near = [COMPONENT_FILE, COMPONENT_FILE_YML].iter().any(|k| strsim::osa_distance(&name, k) <= 1);
    near && !file.text.lines().any(|l| l.starts_with("kind:"))
}

/// One YAML file of the directory, read whole.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user named it (`<dir>/<name>`), for messages.
    pub path: PathBuf,
    /// The file name within the directory.
    pub name: String,
    pub text: String,
}

/// One YAML document of a file: its text and the 1-based line it starts on.
#[derive(Debug, Clone, Copy)]
pub struct Document<'a> {
    pub text: &'a str,
    pub first_line: usize,
}

impl Document<'_> {
    /// The absolute line of the first line (within this document) that holds `key:`,
    /// optionally as a sequence item (`- key:`), searching from `from` (document-relative,
    /// 0-based). The parser does not keep positions of values, so semantic errors point
    /// at the key that introduces them.
    pub fn line_of(&self, key: &str, from: usize) -> Option<usize> {
        self.text.lines().enumerate().skip(from).find_map(|(i, line)| {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            // A quoted key (`"Bad Header": x`) is found by its text.
            let t = t.strip_prefix(['"', '\'']).unwrap_or(t);
            let rest = t.strip_prefix(key)?;
            let rest = rest.trim_start_matches(['"', '\'']);
            rest.starts_with(':').then_some(self.first_line + i)
        })
    }

    /// The line of every `key: value` line (value unquoted), the first where repeated: an
    /// index for finding list entries, built once so that a long list stays linear.
    pub fn entry_lines(&self) -> EntryLines<'_> {
        let mut map = std::collections::HashMap::new();
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            let Some((key, rest)) = t.split_once(':') else { continue };
            let rest = rest.split(" #").next().unwrap_or("").trim();
            map.entry((key.trim(), rest.trim_matches(['"', '\'']))).or_insert(self.first_line + i);
        }
        EntryLines { map, first_line: self.first_line }
    }

    /// Line of `key:` nested under the first `parent:` line.
    pub fn line_of_under(&self, parent: &str, key: &str) -> Option<usize> {
        let start = self.line_of(parent, 0)? - self.first_line;
        self.line_of(key, start + 1)
    }

    /// [`Document::line_of`] and [`Document::line_of_under`] for many keys: the lines
    /// are read once, so that a descriptor's parameters do not each rescan the text.
    pub fn key_lines(&self) -> KeyLines<'_> {
        let keys = self
            .text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let t = line.trim_start().trim_start_matches("- ").trim_start();
                t.find(':').map(|colon| (t[..colon].trim_matches(QUOTES), i))
            })
            .collect();
        KeyLines { doc: *self, keys }
    }
}

/// The quotes `line_of` lets stand between a key and its colon.
const QUOTES: [char; 2] = ['"', '\''];

/// See [`Document::key_lines`]: each line's text before its first colon, quotes trimmed,
/// with its document-relative line, in line order: where `line_of` finds a key that holds
/// no colon or quote itself. A list, not a map: a descriptor has a few dozen lines, and
/// comparing them costs less than hashing.
pub struct KeyLines<'a> {
    doc: Document<'a>,
    keys: Vec<(&'a str, usize)>,
}

impl KeyLines<'_> {
    /// As [`Document::line_of`].
    pub fn line_of(&self, key: &str, from: usize) -> Option<usize> {
        // Such a key could match a line at another colon: ask the text itself.
        if key.is_empty() || key.contains([':', '"', '\'']) {
            return self.doc.line_of(key, from);
        }
        let start = self.keys.partition_point(|&(_, i)| i < from);
        let (_, line) = self.keys[start..].iter().find(|(k, _)| *k == key)?;
        Some(self.doc.first_line + line)
    }

    /// As [`Document::line_of_under`].
    pub fn line_of_under(&self, parent: &str, key: &str) -> Option<usize> {
        let start = self.line_of(parent, 0)? - self.doc.first_line;
        self.line_of(key, start + 1)
    }
}

/// See [`Document::entry_lines`].
pub struct EntryLines<'a> {
    map: std::collections::HashMap<(&'a str, &'a str), usize>,
    first_line: usize,
}

impl EntryLines<'_> {
    /// The line of `key: value`, or the document's first line when it is not found.
    pub fn line(&self, key: &str, value: &str) -> usize {
        self.map.get(&(key, value)).copied().unwrap_or(self.first_line)
    }
}

/// Reads every visible YAML file of `dir`, sorted by name. Problems with single files are
/// reported in `diags` and the file is left out; a directory that cannot be listed at all
/// is reported and yields nothing.
pub fn read_dir(dir: &Path, diags: &mut Diagnostics) -> Vec<SourceFile> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            diags.error(
                Origin::file(dir),
                format!("cannot read the config directory: {e}"),
                "pass --config-dir (or CONND_CONFIG_DIR) naming a readable directory",
            );
            return Vec::new();
        }
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                diags.error(
                    Origin::file(dir),
                    format!("cannot list the config directory: {e}"),
                    "check its permissions",
                );
                continue;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            diags.error(
                Origin::file(entry.path()),
                "file name is not UTF-8",
                "rename the file; connd reads only *.yaml and *.yml names",
            );
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    names.into_iter().filter_map(|name| read_file(dir, name, diags)).collect()
}

fn read_file(dir: &Path, name: String, diags: &mut Diagnostics) -> Option<SourceFile> {
    let path = dir.join(&name);
    let origin = || Origin::file(&path);
    // `metadata` follows symlinks, which is what a ConfigMap volume needs.
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let target = fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
            diags.error(
                origin(),
                format!("dangling symlink: its target {target:?} does not exist"),
                "restore the target or remove the link",
            );
            return None;
        }
        Err(e) => {
            diags.error(origin(), format!("cannot read: {e}"), "check the file's permissions");
            return None;
        }
    };
    if meta.is_dir() {
        return None;
    }
    if !meta.is_file() {
        // A FIFO or a device would block the read or never end.
        diags.error(origin(), "not a regular file", "connd reads only regular files (or symlinks to them) as YAML");
        return None;
    }
    if meta.len() > MAX_FILE_BYTES {
        diags.error(
            origin(),
            format!("file is {} bytes, over the limit of {} bytes", meta.len(), MAX_FILE_BYTES),
            "split the connections over several files",
        );
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` bounds the read even if the file grows between `metadata` and here.
    let read = fs::File::open(&path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        diags.error(origin(), format!("cannot read: {e}"), "check the file's permissions");
        return None;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        diags.error(
            origin(),
            format!("file is over the limit of {MAX_FILE_BYTES} bytes"),
            "split the connections over several files",
        );
        return None;
    }
    match String::from_utf8(bytes) {
        // A byte-order mark may start a YAML stream (YAML 1.2 §5.2); the parser would
        // take it for content.
        Ok(text) => {
            let text = match text.strip_prefix('\u{feff}') {
                Some(rest) => rest.to_owned(),
                None => text,
            };
            Some(SourceFile { path, name, text })
        }
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            diags.error(
                Origin::at(&path, line),
                format!("file is not UTF-8 (invalid byte at offset {})", valid.len()),
                "save the file as UTF-8",
            );
            None
        }
    }
}

/// A `file:` source larger than this is refused: it holds a key or a URL, not a blob.
pub const MAX_VALUE_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a `file:` source: UTF-8, bounded, one trailing newline trimmed. The error is
/// the cause alone; [`read_value_file_or_fix`] gives the fix with it.
pub fn read_value_file(path: &Path) -> Result<String, String> {
    read_value_file_or_fix(path).map_err(|(cause, _)| cause)
}

/// The fix for a missing file (and any read error not told apart below).
const CREATE_FIX: &str =
    "create the file (a relative path is taken from the config directory), correct `file:`, or give the value with `value:`";

/// [`read_value_file`], its error the cause and the fix for that cause: a missing file is
/// created, but a device, a FIFO or an oversized file is the wrong file.
pub fn read_value_file_or_fix(path: &Path) -> Result<String, (String, &'static str)> {
    let io = |e: std::io::Error| {
        let fix = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "let connd's user read the file (its mode, owner or group), or correct `file:`"
            }
            _ => CREATE_FIX,
        };
        (e.to_string(), fix)
    };
    // A FIFO or a device would block the read or never end.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a directory" } else { "not a regular file (a device, FIFO or socket)" };
        return Err((
            format!("it is {what}"),
            "point `file:` at a regular file that holds only the value; connd never reads devices or FIFOs",
        ));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_VALUE_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_VALUE_FILE_BYTES {
        return Err((
            format!("the file is over {MAX_VALUE_FILE_BYTES} bytes"),
            "point `file:` at a file that holds only the value (a key, a password, a URL), at most 1 MiB",
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| ("the file is not UTF-8".to_owned(), "store the value as UTF-8 text (base64 for binary data)"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Splits a YAML stream at its `---` document markers. A marker at column 0 cannot be
/// inside a block scalar (those are indented), so a line scan is exact for the block
/// style that Kubernetes and the platform render. Documents holding only comments and
/// blank lines are dropped.
pub fn documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    let mut push = |from: usize, to: usize, first_line: usize| {
        let doc = &text[from..to];
        let has_content = doc.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
        });
        if has_content {
            docs.push(Document { text: doc, first_line });
        }
    };
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare == "..." || bare.starts_with("... ");
        if is_marker {
            push(start, offset, start_line);
            let rest = bare.get(4..).unwrap_or("").trim();
            // `--- key: value` starts a document on the marker line itself.
            if bare.starts_with("--- ") && !rest.is_empty() && !rest.starts_with('#') {
                start = offset + 4;
                start_line = line_no;
            } else {
                start = offset + line.len();
                start_line = line_no + 1;
            }
        }
        offset += line.len();
    }
    push(start, text.len(), start_line);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_first_line() {
        let text = "# head\n---\nkind: A\n---\n\n# only comments\n---\nkind: B\nx: 1\n...\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 3);
        assert_eq!(docs[0].text, "kind: A\n");
        assert_eq!(docs[1].first_line, 8);
        assert_eq!(docs[1].line_of("x", 0), Some(9));
    }

    #[test]
    fn key_lines_find_what_line_of_finds() {
        let text = "kind: Connection\nname: a\n\"name\": b\nparameters:\n  - name: c\n  'Port': 1\n  a:b: 2\n  \
                    Url: http://x:1\n  name:\n# name: d\n  - - Key\": 3\n  :\n";
        let doc = Document { text, first_line: 7 };
        let lines = doc.key_lines();
        let keys = [
            "kind",
            "name",
            "\"name",
            "parameters",
            "Port",
            "'Port",
            "a",
            "a:b",
            "Url",
            "Key",
            "Key\"",
            "",
            "x",
            "# name",
        ];
        for key in keys {
            for from in 0..14 {
                assert_eq!(lines.line_of(key, from), doc.line_of(key, from), "{key:?} from {from}");
            }
            assert_eq!(lines.line_of_under("parameters", key), doc.line_of_under("parameters", key), "{key:?}");
        }
    }

    #[test]
    fn a_single_document_without_markers() {
        let docs = documents("kind: A\nname: b\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].first_line, 1);
        assert_eq!(docs[0].entry_lines().line("name", "b"), 2);
        assert_eq!(docs[0].entry_lines().line("name", "c"), 1);
    }
}

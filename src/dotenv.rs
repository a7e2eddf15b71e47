//! Quoting a value for a dotenv line, shared by `env --format dotenv` (`output`) and
//! dotenv files (`files::render`).

/// Single quotes where the value holds no `'`, `\` or line break: systemd's
/// `EnvironmentFile=` and python-dotenv take those literally, `$` included (but see below).
/// Otherwise double quotes with only `\` and `"` escaped, the two escapes both readers
/// decode alike (python-dotenv keeps `\$` and `` \` `` as two characters, where systemd
/// drops the backslash); line breaks are kept as they are, inside the quotes, which both
/// read as part of the value. python-dotenv, with its default `interpolate=True`,
/// expands `${NAME}` in every value, quoted or not, and has no escape for it: such a
/// value is exact only with `interpolate=False` (`tests/dotenv_readers.rs` checks these
/// claims against python-dotenv 1.2).
pub fn dotenv_quote(value: &str) -> String {
    if !value.contains(['\'', '\\', '\n', '\r']) {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether python-dotenv (1.2) misreads a file holding `value`: a value ending in `\`
/// (quoted `"...\\"`) makes it skip that variable and every line after it up to and
/// including the next line holding a `"`, even a `"` inside a single-quoted value
/// (`tests/dotenv_readers.rs` shows it). systemd's `EnvironmentFile=` reads it right.
pub fn python_dotenv_loses(value: &str) -> bool {
    value.ends_with('\\')
}

/// The warning for a value [`python_dotenv_loses`], `what` naming it ("variable X").
pub fn python_dotenv_warning(what: &str) -> (String, &'static str) {
    (
        format!(
            "{what} ends in a backslash: in a dotenv file, python-dotenv loses it and every variable after it \
             up to the next line holding a `\"` (systemd's EnvironmentFile= reads it right)"
        ),
        "if a python-dotenv reader reads it, end the value otherwise, or give it as JSON (`env --format json`, \
         a json file) instead",
    )
}

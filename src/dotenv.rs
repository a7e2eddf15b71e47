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

//! What a JSON body failed on, without quoting it: serde_json's own message quotes the
//! offending value (`invalid type: string "<a secret>"`), and the bodies connd reads
//! (parameters, tokens) are secrets. Callers never format a `serde_json::Error` directly.

/// The category and place of `e` ("a syntax error at line 1 column 5"), never its text.
pub fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "a read error",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data => "a value of the wrong type or a missing field",
        serde_json::error::Category::Eof => "an unexpected end",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_place_not_the_content() {
        let e = serde_json::from_str::<std::collections::HashMap<String, u8>>("{\"k\": \"TOPSECRET\"}").unwrap_err();
        assert!(e.to_string().contains("TOPSECRET"), "serde_json changed: the guard is moot");
        let text = json_error(&e);
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert_eq!(text, "a value of the wrong type or a missing field at line 1 column 17");
    }
}

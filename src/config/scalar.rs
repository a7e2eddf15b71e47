//! A value exactly as written (docs/config.md): an unquoted YAML scalar is its text, never
//! YAML's typed reading of it. `22.10`, `1.10`, `0x1F`, `1e3`, `+5`, `.inf`, `007`, `yes`
//! and `2024-01-01` reach the workload as those characters.
//!
//! Two ways there, for the two shapes a value position has:
//! - a position that holds only a scalar (`value:` of a parameter, of a
//!   `configurations.env` entry, of a file value) deserializes into [`Scalar`], which asks
//!   the parser for a string: serde_yaml_ng then hands over the scalar's own text;
//! - a position that holds a scalar or a map (a parameter: `Port: 5432` or
//!   `Port: {value: ...}`) must let the parser decide, and the parser turns `5432` into a
//!   number. Such a value is recovered afterwards by [`plain_texts`], which reads the
//!   document's events with a second parser that keeps every scalar as text.
//!
//! A YAML null (`~`, `null`, or nothing after the colon) has no text that is surely the
//! one meant (an empty value? the characters `~`?), so it is refused with "quote it".

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// What a YAML null in a value position is told: the message, then the fix.
pub const NULL_MESSAGE: &str = "the value is YAML's null (`~`, `null` or nothing), which is not text: quote it";
pub const NULL_FIX: &str = "quote it: write `\"\"` for an empty value, or `\"~\"` / `\"null\"` for those characters";

/// A YAML scalar's text, exactly as written (without its quotes, and with YAML's
/// escapes and line folding applied to quoted and folded scalars). Deserializing a null
/// is an error whose message says to quote it; a map or a list is an error too.
#[derive(Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

/// Scalars are values, and values may be secrets.
impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::secret::REDACTED)
    }
}

/// The text of a non-null scalar: the parser is asked for a string, which it gives as
/// written whatever YAML would type it as.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `Option` is how the parser tells a null from a scalar whose text is `null`
        // in quotes: it looks at the style before handing the text over.
        match Option::<Text>::deserialize(d)? {
            Some(Text(text)) => Ok(Scalar(text)),
            None => Err(de::Error::custom(NULL_MESSAGE)),
        }
    }
}

/// For an optional value field that must refuse a null rather than take it as absent:
/// `#[serde(default, deserialize_with = "scalar::written")] value: Option<Scalar>`.
pub fn written<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Scalar>, D::Error> {
    Scalar::deserialize(d).map(Some)
}

/// The text of every plain (unquoted) scalar value of the map under the top-level key
/// `section` of one YAML document, by its key: `parameters: {Port: 5432}` gives
/// `Port → "5432"`. Aliases of scalars are followed. Quoted and block scalars are left
/// out (the first parser keeps their text already); so is everything when the document
/// does not parse, and a caller that finds no text must refuse the value.
pub fn plain_texts(document: &str, section: &str) -> HashMap<String, String> {
    /// One open map or list, and where the next node goes in it.
    struct Frame {
        is_map: bool,
        /// In a map: the next node is a key.
        next_is_key: bool,
        /// In a map: the last key read, if it was a scalar.
        key: Option<String>,
        /// This container is itself a key of its parent map (YAML allows that).
        is_key: bool,
    }
    let mut out = HashMap::new();
    let mut anchors: HashMap<usize, (String, TScalarStyle)> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(document);
    while let Ok((event, _)) = parser.next_token() {
        let scalar = match &event {
            Event::StreamEnd => break,
            Event::Scalar(text, style, anchor, _) => {
                if *anchor > 0 {
                    anchors.insert(*anchor, (text.clone(), *style));
                }
                Some((text.clone(), *style))
            }
            Event::Alias(id) => anchors.get(id).cloned(),
            Event::MappingStart(..) | Event::SequenceStart(..) => None,
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(done) = stack.pop() {
                    if let Some(parent) = stack.last_mut().filter(|p| p.is_map) {
                        parent.next_is_key = !done.is_key;
                    }
                }
                continue;
            }
            _ => continue,
        };
        let as_key = stack.last().is_some_and(|top| top.is_map && top.next_is_key);
        if as_key {
            if let Some(top) = stack.last_mut() {
                top.key = scalar.as_ref().map(|(text, _)| text.clone());
                top.next_is_key = false;
            }
        } else {
            let section_key = match stack.as_slice() {
                [root, map] if root.is_map && map.is_map && root.key.as_deref() == Some(section) => map.key.as_ref(),
                _ => None,
            };
            if let (Some(key), Some((text, TScalarStyle::Plain))) = (section_key, &scalar) {
                out.insert(key.clone(), text.clone());
            }
            if let Some(top) = stack.last_mut().filter(|t| t.is_map) {
                top.next_is_key = true;
            }
        }
        match event {
            Event::MappingStart(..) => stack.push(Frame { is_map: true, next_is_key: true, key: None, is_key: as_key }),
            Event::SequenceStart(..) => {
                stack.push(Frame { is_map: false, next_is_key: false, key: None, is_key: as_key })
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(default, deserialize_with = "written")]
        value: Option<Scalar>,
    }

    fn value(yaml: &str) -> Result<String, String> {
        serde_yaml::from_str::<Doc>(yaml).map(|d| d.value.map(|s| s.0).unwrap_or_default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_scalar_is_its_text() {
        for text in ["22.10", "1.10", "0x1F", "1e3", "+5", ".inf", "007", "yes", "true", "2024-01-01", "-0", "1_000"] {
            assert_eq!(value(&format!("value: {text}\n")).as_deref(), Ok(text), "{text}");
        }
        assert_eq!(value("value: \"~\"\n").as_deref(), Ok("~"));
        assert_eq!(value("value: ''\n").as_deref(), Ok(""));
        assert_eq!(value("{}").as_deref(), Ok(""), "absent is not null");
    }

    #[test]
    fn a_null_says_quote_it() {
        for null in ["value: ~\n", "value: null\n", "value:\n", "value: Null # x\n"] {
            let e = value(null).unwrap_err();
            assert!(e.contains("quote it"), "{null}: {e}");
        }
    }

    #[test]
    fn plain_texts_of_a_section() {
        let doc = "kind: Connection\nport: 1\nparameters:\n  A: 22.10\n  B: {value: 1}\n  C: &c 0x1F\n  D: \"1.10\"\n  E: *c\n  F: [1]\nother: {A: 3}\n";
        let texts = plain_texts(doc, "parameters");
        assert_eq!(texts.get("A").map(String::as_str), Some("22.10"));
        assert_eq!(texts.get("C").map(String::as_str), Some("0x1F"));
        assert_eq!(texts.get("E").map(String::as_str), Some("0x1F"));
        assert!(!texts.contains_key("B") && !texts.contains_key("D") && !texts.contains_key("F"));
        assert_eq!(texts.len(), 3, "{:?}", texts.keys());
        let flow = plain_texts("{kind: Connection, parameters: {FeedRelease: 22.10, X: 1e3}}", "parameters");
        assert_eq!(flow.get("FeedRelease").map(String::as_str), Some("22.10"));
        assert_eq!(flow.get("X").map(String::as_str), Some("1e3"));
        // A document the second parser refuses gives what was read before the error.
        assert_eq!(plain_texts("parameters: {A: 1, B: [", "parameters").get("A").map(String::as_str), Some("1"));
    }
}

//! The fast way to read one YAML document: yaml-rust2's events, kept in a list, and a
//! serde `Deserializer` over them, so that the raw model (`raw`) and its visitors read
//! them as they read serde_yaml_ng (whose `DeserializerFromEvents` each method follows).
//! It does the same work as serde_yaml_ng over libyaml in about half the time.
//!
//! It is taken only where it reads exactly as serde_yaml_ng does, and gives way
//! (`None`) wherever it might not, so that every message stays serde_yaml_ng's:
//! - any error at all, of the YAML or of the model's visitors (serde_yaml_ng then says
//!   it, in its words and at its line);
//! - tags, anchors and aliases, a key that is not a scalar, a key given twice in one
//!   map, `<<`, nesting near serde_yaml_ng's recursion limit, more than one document;
//! - a flow collection (`{...}`, `[...]`) over more than one line, and text outside
//!   the subset of YAML where the two parsers agree ([`simple`]).
//!
//! Plain scalars resolve as serde_yaml_ng resolves them (null, booleans, integers and
//! floats of its schema); everything else is a string. The equivalence tests
//! (`events_equiv.rs`) feed both the same documents and compare what they read.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};
use std::fmt;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Maps and lists open at once past this give way: serde_yaml_ng refuses past 128.
const MAX_DEPTH: usize = 100;

/// Keys of one map past this give way rather than be compared for duplicates one by one.
const MAX_KEYS: usize = 64;

/// One event of a document, as the deserializer needs it.
#[derive(Debug)]
enum Ev {
    MapStart,
    MapEnd,
    SeqStart,
    SeqEnd,
    /// The scalar's text, and whether it is plain (unquoted, not a block scalar).
    Scalar(String, bool),
}

/// What walks keys ([`Events::walk_keys`], [`walk_tree`]) call for each key: given its
/// place (the keys walked into to reach its map) and the key, whether to walk its value.
pub type Visit<'a> = dyn FnMut(&[&str], &str) -> bool + 'a;

/// One YAML document's events, read by [`read`].
#[derive(Debug)]
pub struct Events {
    list: Vec<Ev>,
    /// serde_yaml_ng's tree of the document may not be what the events say, and
    /// [`Events::walk_keys`] gives way: a map holds two keys that are not strings, which
    /// the tree may take for one (`1` and `0x1`), or an integer is past 64 bits, which
    /// the tree refuses.
    no_walk: bool,
}

/// The longest line, in bytes, the fast path reads: libyaml's limit on how far a key may
/// run from its start to its `:` (its `simple key` length), 1024 bytes.
const MAX_LINE: usize = 1024;

/// Whether `text` keeps to the YAML where libyaml and yaml-rust2 agree on what is valid
/// and what it means (the differences the equivalence tests found, and their kin):
/// - no tabs, carriage returns, line separators or other characters libyaml does not
///   take as printable text;
/// - none of `|` `>` (block scalars), `!` (tags), `&` `*` (anchors, aliases) and `%`
///   (directives) anywhere, even in a quoted value or a comment;
/// - no `?` (explicit keys) before a space or a line's end, no `:` before a flow
///   indicator (`,[]{}`);
/// - nothing that may start a token where YAML would read an indicator instead: `:`
///   (an empty key), `?`, `@` or `` ` `` first on a line, after `- `, `: `, or in a flow
///   collection after `[`, `{` or `,`;
/// - no line over [`MAX_LINE`] bytes: libyaml refuses a key that far from its start,
///   counted in bytes, where yaml-rust2 counts characters and sets no limit in a flow
///   collection.
fn simple(text: &str, ascii: bool) -> bool {
    let bytes = text.as_bytes();
    // The last byte that was not a space, and where the line began.
    let mut last = b'\n';
    let mut line_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            line_start = i + 1;
        } else if i - line_start >= MAX_LINE {
            return false;
        }
        match BYTES[usize::from(b)] {
            Byte::Text => {}
            Byte::Refused => return false,
            Byte::Indicator => {
                let next = bytes.get(i + 1).copied().unwrap_or(b'\n');
                let starts_token = matches!(last, b'\n' | b'-' | b':' | b'{' | b'[' | b',' | b'?');
                let risky = match b {
                    b'?' => starts_token || matches!(next, b' ' | b'\n'),
                    b':' => starts_token || matches!(next, b',' | b'[' | b']' | b'{' | b'}'),
                    _ => starts_token,
                };
                if risky {
                    return false;
                }
            }
        }
        if b != b' ' {
            last = b;
        }
    }
    ascii
        || text.chars().all(|c| match c {
            '\n' | ' '..='~' => true,
            '\u{feff}' | '\u{2028}' | '\u{2029}' => false,
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}' => true,
            _ => false,
        })
}

/// What [`simple`] makes of one byte of the text.
#[derive(Clone, Copy)]
enum Byte {
    /// A line break, printable ASCII, or a byte of a character past ASCII (those are
    /// checked whole, after the bytes).
    Text,
    /// A control character or DEL, or one of `|` `>` `!` `&` `*` `%`.
    Refused,
    /// `?` `:` `@` `` ` ``: refused where YAML may read them as an indicator.
    Indicator,
}

/// [`Byte`] of every byte value: one lookup per byte of every document.
static BYTES: [Byte; 256] = {
    let mut table = [Byte::Text; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'|' | b'>' | b'!' | b'&' | b'*' | b'%' => Byte::Refused,
            b'?' | b':' | b'@' | b'`' => Byte::Indicator,
            b'\n' | b' '..=b'~' | 0x80.. => Byte::Text,
            _ => Byte::Refused,
        };
        b += 1;
    }
    table
};

/// Reads `text`, one YAML document, into its events; `None` where the fast path gives
/// way (see the module's header).
pub fn read(text: &str) -> Option<Events> {
    let ascii = text.is_ascii();
    if !simple(text, ascii) {
        return None;
    }
    let mut reader = Reader {
        text,
        line_starts: None,
        ascii,
        events: Vec::with_capacity(text.len() / 8),
        open: Vec::new(),
        flow: None,
        no_walk: false,
    };
    let mut parser = Parser::new_from_str(text);
    let expect = [Event::StreamStart, Event::DocumentStart];
    for wanted in expect {
        if parser.next_token().ok()?.0 != wanted {
            return None;
        }
    }
    loop {
        let (event, mark) = parser.next_token().ok()?;
        if matches!(event, Event::DocumentEnd) && reader.open.is_empty() && !reader.events.is_empty() {
            break;
        }
        reader.event(event, mark)?;
    }
    let events = Events { list: reader.events, no_walk: reader.no_walk };
    matches!(parser.next_token().ok()?.0, Event::StreamEnd).then_some(events)
}

/// One open map: whether the next node is a key, and the keys read so far.
struct Map {
    next_is_key: bool,
    keys: Vec<usize>,
    /// Whether a key that is not a string (a number, a boolean, a null) was read.
    typed_key: bool,
}

/// The state of [`read`].
struct Reader<'a> {
    text: &'a str,
    /// Where each line starts, in bytes (line `n`, 1-based, at `[n - 1]`): made when first
    /// needed, for text that is not ASCII alone, where a position's index counts
    /// characters, not bytes.
    line_starts: Option<Vec<usize>>,
    /// The text is ASCII: a position's index is its byte.
    ascii: bool,
    events: Vec<Ev>,
    /// The open maps and lists (`None`), innermost last.
    open: Vec<Option<Map>>,
    /// The outermost open flow collection (`{...}`, `[...]`): how many were open with
    /// it, and its line.
    flow: Option<(usize, usize)>,
    /// See [`Events::no_walk`].
    no_walk: bool,
}

impl Reader<'_> {
    /// Takes one event of the document's node; `None` to give way.
    fn event(&mut self, event: Event, mark: Marker) -> Option<()> {
        // A flow collection over several lines gives way: the two parsers differ on the
        // indentation its lines need.
        if self.flow.is_some_and(|(_, line)| line != mark.line()) {
            return None;
        }
        // The document's one node is done: nothing may follow.
        if self.open.is_empty() && !self.events.is_empty() {
            return None;
        }
        // Whether this node, if it starts one, is a key of the open map.
        let starts_node = matches!(event, Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..));
        let is_key = match self.open.last_mut() {
            Some(Some(map)) if starts_node => {
                map.next_is_key = !map.next_is_key;
                !map.next_is_key
            }
            _ => false,
        };
        let ev = match event {
            Event::Scalar(text, style, 0, None) => {
                if let Some(Some(map)) = self.open.last_mut().filter(|_| is_key) {
                    let dup = map.keys.iter().any(|&k| matches!(&self.events[k], Ev::Scalar(t, _) if *t == text));
                    if dup || text == "<<" || map.keys.len() >= MAX_KEYS {
                        return None;
                    }
                    map.keys.push(self.events.len());
                }
                let plain = style == TScalarStyle::Plain;
                let typed = if plain { resolve(&text) } else { Plain::Str };
                self.no_walk |= matches!(typed, Plain::U128(_) | Plain::I128(_));
                if let Some(Some(map)) = self.open.last_mut().filter(|_| is_key && !matches!(typed, Plain::Str)) {
                    self.no_walk |= map.typed_key;
                    map.typed_key = true;
                }
                Ev::Scalar(text, plain)
            }
            Event::MappingStart(0, None) | Event::SequenceStart(0, None) if !is_key && self.open.len() < MAX_DEPTH => {
                let is_map = matches!(event, Event::MappingStart(..));
                if self.flow.is_none() && self.opens_flow(mark) {
                    self.flow = Some((self.open.len() + 1, mark.line()));
                }
                self.open.push(is_map.then(|| Map { next_is_key: true, keys: Vec::new(), typed_key: false }));
                if is_map {
                    Ev::MapStart
                } else {
                    Ev::SeqStart
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let is_map = matches!(event, Event::MappingEnd);
                if self.open.last().map(Option::is_some) != Some(is_map) {
                    return None;
                }
                if self.flow.is_some_and(|(depth, _)| depth == self.open.len()) {
                    self.flow = None;
                }
                self.open.pop();
                if is_map {
                    Ev::MapEnd
                } else {
                    Ev::SeqEnd
                }
            }
            _ => return None,
        };
        self.events.push(ev);
        Some(())
    }

    /// Whether the collection starting at `mark` is a flow one: its first character is
    /// `{` or `[`.
    fn opens_flow(&mut self, mark: Marker) -> bool {
        let text = self.text;
        let first = if self.ascii {
            text.as_bytes().get(mark.index()).map(|&b| char::from(b))
        } else {
            let starts = self.line_starts.get_or_insert_with(|| {
                std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect()
            });
            let start = mark.line().checked_sub(1).and_then(|i| starts.get(i));
            start.and_then(|&start| text[start..].chars().nth(mark.col()))
        };
        // Unknown counts as flow: its lines are then checked.
        first.map_or(true, |c| matches!(c, '{' | '['))
    }
}

impl Events {
    /// The document as `T`, or `None` where the fast path gives way: the caller then reads
    /// the text with serde_yaml_ng, which gives the same value or says what is wrong.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Option<T> {
        let mut de = De { events: &self.list, pos: 0 };
        let value = T::deserialize(&mut de).ok()?;
        (de.pos == self.list.len()).then_some(value)
    }

    /// Walks the document's maps as [`walk_tree`] walks serde_yaml_ng's tree of it, without
    /// building one; `None`, before visiting anything, where that tree could differ.
    pub fn walk_keys(&self, visit: &mut Visit<'_>) -> Option<()> {
        /// Walks the node at `pos`; returns the position after it.
        fn node<'a>(list: &'a [Ev], mut pos: usize, place: &mut Vec<&'a str>, visit: &mut Visit<'_>) -> usize {
            match list.get(pos) {
                Some(Ev::SeqStart) => {
                    pos += 1;
                    while !matches!(list.get(pos), Some(Ev::SeqEnd) | None) {
                        pos = node(list, pos, place, visit);
                    }
                    pos + 1
                }
                Some(Ev::MapStart) => {
                    pos += 1;
                    while let Some(Ev::Scalar(key, plain)) = list.get(pos) {
                        let string = !plain || matches!(resolve(key), Plain::Str);
                        if string && visit(place, key) {
                            place.push(key);
                            pos = node(list, pos + 1, place, visit);
                            place.pop();
                        } else {
                            pos = skip(list, pos + 1);
                        }
                    }
                    pos + 1
                }
                Some(Ev::Scalar(..) | Ev::MapEnd | Ev::SeqEnd) | None => pos + 1,
            }
        }
        if self.no_walk {
            return None;
        }
        node(&self.list, 0, &mut Vec::new(), visit);
        Some(())
    }
}

/// The position after the node at `pos`.
fn skip(list: &[Ev], mut pos: usize) -> usize {
    let mut depth = 0usize;
    while let Some(ev) = list.get(pos) {
        pos += 1;
        match ev {
            Ev::MapStart | Ev::SeqStart => depth += 1,
            Ev::MapEnd | Ev::SeqEnd => depth = depth.saturating_sub(1),
            Ev::Scalar(..) => {}
        }
        if depth == 0 {
            break;
        }
    }
    pos
}

/// Walks serde_yaml_ng's tree of a document: `visit(place, key)` for each key of each
/// map that is a string, in document order, `place` being the keys walked into to reach
/// that map (lists pass their place to their items); the key's value is walked when
/// `visit` says so.
pub fn walk_tree(value: &serde_yaml::Value, visit: &mut Visit<'_>) {
    fn node<'a>(value: &'a serde_yaml::Value, place: &mut Vec<&'a str>, visit: &mut Visit<'_>) {
        match value {
            serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| node(v, place, visit)),
            serde_yaml::Value::Mapping(map) => {
                for (key, value) in map {
                    let Some(key) = key.as_str() else { continue };
                    if visit(place, key) {
                        place.push(key);
                        node(value, place, visit);
                        place.pop();
                    }
                }
            }
            _ => {}
        }
    }
    node(value, &mut Vec::new(), visit);
}

/// Whatever stops the fast path: the caller reads the document the other way, which
/// says what (if anything) is wrong.
#[derive(Debug)]
pub struct GiveWay;

impl fmt::Display for GiveWay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("read with serde_yaml_ng instead")
    }
}

impl std::error::Error for GiveWay {}

impl de::Error for GiveWay {
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveWay
    }
}

type Result<T> = std::result::Result<T, GiveWay>;

/// A plain scalar as serde_yaml_ng resolves it when nothing asks for a type: its
/// `visit_untagged_scalar`.
enum Plain {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    U128(u128),
    I128(i128),
    F64(f64),
    Str,
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Leading zeros followed by digits is a string (YAML 1.2), as serde_yaml_ng reads it.
fn digits_but_not_number(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    t.len() > 1 && t.starts_with('0') && t[1..].bytes().all(|b| b.is_ascii_digit())
}

/// serde_yaml_ng's `parse_unsigned_int`.
fn unsigned<T>(text: &str, radix: fn(&str, u32) -> std::result::Result<T, std::num::ParseIntError>) -> Option<T> {
    let unpositive = text.strip_prefix('+').unwrap_or(text);
    for (prefix, base) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(n) = radix(rest, base) {
                return Some(n);
            }
        }
    }
    if unpositive.starts_with(['+', '-']) || digits_but_not_number(text) {
        return None;
    }
    radix(unpositive, 10).ok()
}

/// serde_yaml_ng's `parse_negative_int`.
fn negative<T>(text: &str, radix: fn(&str, u32) -> std::result::Result<T, std::num::ParseIntError>) -> Option<T> {
    for (prefix, base) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = text.strip_prefix(prefix) {
            if let Ok(n) = radix(&format!("-{rest}"), base) {
                return Some(n);
            }
        }
    }
    if digits_but_not_number(text) {
        return None;
    }
    radix(text, 10).ok()
}

/// serde_yaml_ng's `parse_f64`.
fn parse_f64(text: &str) -> Option<f64> {
    let unpositive = match text.strip_prefix('+') {
        Some(rest) if rest.starts_with(['+', '-']) => return None,
        Some(rest) => rest,
        None => text,
    };
    if let ".inf" | ".Inf" | ".INF" = unpositive {
        return Some(f64::INFINITY);
    }
    if let "-.inf" | "-.Inf" | "-.INF" = text {
        return Some(f64::NEG_INFINITY);
    }
    if let ".nan" | ".NaN" | ".NAN" = text {
        return Some(f64::NAN.copysign(1.0));
    }
    unpositive.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn resolve(text: &str) -> Plain {
    if is_null(text) {
        return Plain::Null;
    }
    if let Some(b) = parse_bool(text) {
        return Plain::Bool(b);
    }
    // Only text that starts like a number can be one: the common case (a word, a URL)
    // is settled by its first byte.
    let numeric = text.bytes().next().is_some_and(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'));
    if !numeric {
        return Plain::Str;
    }
    if let Some(n) = unsigned(text, u64::from_str_radix) {
        return Plain::U64(n);
    }
    if let Some(n) = negative(text, i64::from_str_radix) {
        return Plain::I64(n);
    }
    if let Some(n) = unsigned(text, u128::from_str_radix) {
        return Plain::U128(n);
    }
    if let Some(n) = negative(text, i128::from_str_radix) {
        return Plain::I128(n);
    }
    if !digits_but_not_number(text) {
        if let Some(f) = parse_f64(text) {
            return Plain::F64(f);
        }
    }
    Plain::Str
}

/// The deserializer: a position in the event list.
struct De<'de> {
    events: &'de [Ev],
    pos: usize,
}

impl<'de> De<'de> {
    fn peek(&self) -> Result<&'de Ev> {
        self.events.get(self.pos).ok_or(GiveWay)
    }

    fn next(&mut self) -> Result<&'de Ev> {
        let ev = self.peek()?;
        self.pos += 1;
        Ok(ev)
    }

    /// Visits the map whose start was just read; the visitor must read it to its end, as
    /// serde_yaml_ng requires.
    fn map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let value = visitor.visit_map(Access { de: self })?;
        match self.next()? {
            Ev::MapEnd => Ok(value),
            _ => Err(GiveWay),
        }
    }

    fn seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let value = visitor.visit_seq(Access { de: self })?;
        match self.next()? {
            Ev::SeqEnd => Ok(value),
            _ => Err(GiveWay),
        }
    }

    /// Skips one node.
    fn skip(&mut self) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match self.next()? {
                Ev::MapStart | Ev::SeqStart => depth += 1,
                Ev::MapEnd | Ev::SeqEnd => depth = depth.checked_sub(1).ok_or(GiveWay)?,
                Ev::Scalar(..) => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

/// A map's entries or a list's items, up to its end event.
struct Access<'a, 'de> {
    de: &'a mut De<'de>,
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = GiveWay;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.de.peek()? {
            Ev::MapEnd => Ok(None),
            _ => seed.deserialize(&mut *self.de).map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = GiveWay;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        match self.de.peek()? {
            Ev::SeqEnd => Ok(None),
            _ => seed.deserialize(&mut *self.de).map(Some),
        }
    }
}

/// An enum written as a scalar: its unit variant, as serde_yaml_ng reads one untagged.
struct Unit<'a, 'de> {
    de: &'a mut De<'de>,
}

impl<'de> de::EnumAccess<'de> for Unit<'_, 'de> {
    type Error = GiveWay;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        Ok((seed.deserialize(&mut *self.de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for Unit<'_, 'de> {
    type Error = GiveWay;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value> {
        Err(GiveWay)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
}

/// Each method as serde_yaml_ng's `DeserializerFromEvents` answers it for untagged,
/// unaliased events; where it would fail, this gives way.
impl<'de> Deserializer<'de> for &mut De<'de> {
    type Error = GiveWay;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Ev::Scalar(text, true) => match resolve(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::U64(n) => visitor.visit_u64(n),
                Plain::I64(n) => visitor.visit_i64(n),
                Plain::U128(n) => visitor.visit_u128(n),
                Plain::I128(n) => visitor.visit_i128(n),
                Plain::F64(f) => visitor.visit_f64(f),
                Plain::Str => visitor.visit_borrowed_str(text),
            },
            Ev::Scalar(text, false) => visitor.visit_borrowed_str(text),
            Ev::MapStart => self.map(visitor),
            Ev::SeqStart => self.seq(visitor),
            Ev::MapEnd | Ev::SeqEnd => Err(GiveWay),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Ev::Scalar(text, true) => visitor.visit_bool(parse_bool(text).ok_or(GiveWay)?),
            _ => Err(GiveWay),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Ev::Scalar(text, _) => visitor.visit_borrowed_str(text),
            _ => Err(GiveWay),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            Ev::Scalar(text, true) if is_null(text) => {
                self.pos += 1;
                visitor.visit_none()
            }
            Ev::Scalar(..) | Ev::MapStart | Ev::SeqStart => visitor.visit_some(self),
            Ev::MapEnd | Ev::SeqEnd => Err(GiveWay),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Ev::Scalar(text, true) if is_null(text) => visitor.visit_unit(),
            _ => Err(GiveWay),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Ev::SeqStart => self.seq(visitor),
            Ev::Scalar(text, true) if text.is_empty() => {
                visitor.visit_seq(de::value::SeqDeserializer::<std::iter::Empty<()>, GiveWay>::new(std::iter::empty()))
            }
            _ => Err(GiveWay),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()? {
            Ev::MapStart => self.map(visitor),
            Ev::Scalar(text, true) if text.is_empty() => visitor
                .visit_map(de::value::MapDeserializer::<std::iter::Empty<((), ())>, GiveWay>::new(std::iter::empty())),
            _ => Err(GiveWay),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek()? {
            Ev::Scalar(..) => visitor.visit_enum(Unit { de: self }),
            _ => Err(GiveWay),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    // connd's raw model asks for none of these: they give way rather than risk reading
    // a number otherwise than serde_yaml_ng does.

    fn deserialize_i8<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(GiveWay)
    }
}

#[cfg(test)]
#[path = "events_equiv.rs"]
mod tests;

//! YAML through `saphyr-parser`'s event stream (a maintained, safe-Rust YAML
//! 1.2 parser that reports the position of every event).
//!
//! The tree is built here rather than deserialised with serde so that every
//! node keeps its position and decoding can report all errors, not the first.
//! Anchors and aliases are expanded, and `<<` merge keys (which Compose users
//! rely on for shared defaults) are honoured: explicit keys win over merged ones.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

use super::{SyntaxError, tidy};
use crate::node::{Key, Node, Pos, Text, Value};

/// Mappings and sequences nested deeper than this are refused, so a hostile
/// file cannot exhaust the stack of code that walks the tree.
const MAX_DEPTH: usize = 64;
/// Alias expansion is bounded so that a "billion laughs" file cannot exhaust memory.
const MAX_ALIAS_NODES: usize = 100_000;

/// A collection still open. Its items (entries) so far are at the end of
/// the parse's one stack of items (entries), from `start` on, so that each
/// is allocated once, at its size, when it closes.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        start: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        start: usize,
        merges: Vec<Node>,
        key: Option<PendingKey>,
    },
}

enum PendingKey {
    Key(Key),
    Merge,
}

fn pos(m: &Marker) -> Pos {
    Pos::new(m.line() as u32, m.col() as u32 + 1)
}

fn error(pos: Pos, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        pos,
        message: message.into(),
    }
}

fn count_nodes(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| count_nodes(v)).sum(),
        _ => 0,
    }
}

pub(super) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    match super::yaml_plain::document(text) {
        Some(docs) => Ok(docs),
        None => parse_events(text),
    }
}

/// Through `saphyr-parser`'s events: every document, and every error.
pub(super) fn parse_events(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut items: Vec<Node> = Vec::new();
    let mut entries: Vec<(Key, Node)> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut expanded = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let mut at = pos(e.marker());
            if e.info().contains("tab") {
                at = nearest_tab(text, at).unwrap_or(at);
            }
            error(at, explain(text, &stack, at, e.info()))
        })?;
        let at = pos(&span.start);
        let done = match event {
            Event::Scalar(text, style, anchor, tag) => {
                // A plain scalar is resolved by the core schema unless tagged `!!str`.
                let node = if style == ScalarStyle::Plain
                    && tag.as_ref().is_none_or(|t| t.suffix != "str")
                {
                    plain_scalar(text, at)
                } else {
                    Node::new(at, Value::Str(Text::from(text)))
                };
                Some((node, anchor, style == ScalarStyle::Plain))
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| error(at, "alias refers to an unknown anchor"))?;
                expanded += count_nodes(&node);
                if expanded > MAX_ALIAS_NODES {
                    return Err(error(at, "aliases expand to too many nodes"));
                }
                Some((Node { pos: at, ..node }, 0, false))
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(error(at, "nesting is too deep"));
                }
                stack.push(Frame::Seq {
                    pos: at,
                    anchor,
                    start: items.len(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(error(at, "nesting is too deep"));
                }
                stack.push(Frame::Map {
                    pos: at,
                    anchor,
                    start: entries.len(),
                    merges: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, start }) => {
                    let seq = items.drain(start..).collect();
                    Some((Node::new(pos, Value::Seq(seq)), anchor, false))
                }
                _ => return Err(error(at, "unbalanced sequence end")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    pos,
                    anchor,
                    start,
                    merges,
                    ..
                }) => {
                    let mut map = entries.drain(start..).collect();
                    merge_into(&mut map, merges)?;
                    Some((Node::new(pos, Value::Map(map)), anchor, false))
                }
                _ => return Err(error(at, "unbalanced mapping end")),
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => None,
        };
        let Some((node, anchor, plain)) = done else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq { .. }) => items.push(node),
            Some(Frame::Map { merges, key, .. }) => match key.take() {
                None => {
                    let pos = node.pos;
                    let name = match node.value {
                        Value::Null => Some(Text::default()),
                        _ => node.into_scalar_text(),
                    }
                    .ok_or_else(|| error(pos, "mapping keys must be plain values"))?;
                    *key = Some(if plain && name == "<<" {
                        PendingKey::Merge
                    } else {
                        PendingKey::Key(Key { name, pos })
                    });
                }
                Some(PendingKey::Key(k)) => entries.push((k, node)),
                Some(PendingKey::Merge) => merges.push(node),
            },
        }
    }
    Ok(docs)
}

/// The text of `text` from 1-based `pos` to the end of its line.
fn rest_of_line(text: &str, pos: Pos) -> &str {
    let line = text
        .lines()
        .nth(pos.line.saturating_sub(1) as usize)
        .unwrap_or("");
    match line
        .char_indices()
        .nth(pos.column.saturating_sub(1) as usize)
    {
        Some((i, _)) => &line[i..],
        None => "",
    }
}

/// The tab an error about a tab is about: the parser reports a tab in
/// indentation just after it, or the start of a scalar it was scanning when
/// it found one. So: the last tab on `pos`'s line up to `pos`, else the first
/// tab after it.
fn nearest_tab(text: &str, pos: Pos) -> Option<Pos> {
    let (row, col) = (pos.line.saturating_sub(1) as usize, pos.column as usize);
    let mut lines = text.lines().enumerate().skip(row);
    let (_, line) = lines.next()?;
    let tab_columns = |line: &str| -> Vec<usize> {
        line.chars()
            .enumerate()
            .filter(|&(_, c)| c == '\t')
            .map(|(i, _)| i + 1)
            .collect()
    };
    let on_line = tab_columns(line);
    if let Some(&c) = on_line.iter().rev().find(|&&c| c <= col) {
        return Some(Pos::new(pos.line, c as u32));
    }
    if let Some(&c) = on_line.iter().find(|&&c| c > col) {
        return Some(Pos::new(pos.line, c as u32));
    }
    lines.find_map(|(i, l)| {
        tab_columns(l)
            .first()
            .map(|&c| Pos::new(i as u32 + 1, c as u32))
    })
}

/// The parser's message, made specific where it is vague: an unknown alias is
/// named, and an error inside an unclosed `[` or `{` points at it.
fn explain(text: &str, stack: &[Frame], at: Pos, info: &str) -> String {
    if info.contains("unknown anchor") {
        let alias: String = rest_of_line(text, at)
            .chars()
            .skip(1)
            .take_while(|c| !c.is_whitespace() && !",[]{}".contains(*c))
            .collect();
        if !alias.is_empty() {
            return format!(
                "alias *{alias} refers to an anchor that is not defined (write &{alias} on a value above it first)"
            );
        }
    }
    let message = tidy(info);
    if info.contains("tab") {
        return format!("{message}; indent YAML with spaces, not tabs");
    }
    let open_flow = stack.iter().rev().find_map(|f| {
        let p = match f {
            Frame::Seq { pos, .. } | Frame::Map { pos, .. } => *pos,
        };
        match rest_of_line(text, p).chars().next() {
            Some('[') => Some(("list", p, ']')),
            Some('{') => Some(("table", p, '}')),
            _ => None,
        }
    });
    match open_flow {
        Some((what, p, close)) if p.line < at.line => {
            format!(
                "{message} (inside the {what} opened at {p}: is its closing '{close}' missing?)"
            )
        }
        _ => message,
    }
}

/// Applies `<<: *base` (or `<<: [*a, *b]`): merged keys never override keys
/// written in the mapping itself, and earlier merge sources win over later ones.
fn merge_into(entries: &mut Vec<(Key, Node)>, merges: Vec<Node>) -> Result<(), SyntaxError> {
    for merge in merges {
        let sources = match merge.value {
            Value::Seq(items) => items,
            Value::Map(_) => vec![merge],
            _ => {
                return Err(error(
                    merge.pos,
                    "a merge key (<<) needs a mapping or a list of mappings",
                ));
            }
        };
        for source in sources {
            let Value::Map(source_entries) = source.value else {
                return Err(error(
                    source.pos,
                    "a merge key (<<) needs a mapping or a list of mappings",
                ));
            };
            for (k, v) in source_entries {
                if !entries.iter().any(|(e, _)| e.name == k.name) {
                    entries.push((k, v));
                }
            }
        }
    }
    Ok(())
}

/// A plain scalar's node: its value by the core schema, and a number's text
/// as written. (The general parser's text is an owned string: taken, not
/// copied.)
pub(super) fn plain_scalar<T: AsRef<str> + Into<Text>>(text: T, at: Pos) -> Node {
    match resolve_plain_typed(text.as_ref()) {
        None => Node::new(at, Value::Str(text.into())),
        Some(value @ (Value::Int(_) | Value::Float(_))) => Node::new(at, value).with_raw(text),
        Some(value) => Node::new(at, value),
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema: its value when it
/// is not a string. Unlike YAML 1.1, `no`, `on` and `8080:80` stay strings.
fn resolve_plain_typed(s: &str) -> Option<Value> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Some(Value::Int(i));
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Some(Value::Int(i));
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Some(Value::Int(i));
    }
    if is_float(digits)
        && let Ok(f) = s.parse::<f64>()
    {
        return Some(Value::Float(f));
    }
    None
}

/// [`resolve_plain_typed`], strings included.
#[cfg(test)]
fn resolve_plain(s: &str) -> Value {
    resolve_plain_typed(s).unwrap_or_else(|| Value::Str(Text::from(s)))
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's float form.
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit()))
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(n: &'a Node, key: &str) -> &'a Node {
        match &n.value {
            Value::Map(m) => &m.iter().find(|(k, _)| k.name == key).unwrap().1,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(resolve_plain("no"), Value::Str("no".into()));
        assert_eq!(resolve_plain("8080:80"), Value::Str("8080:80".into()));
        assert_eq!(resolve_plain("0.5"), Value::Float(0.5));
        assert_eq!(resolve_plain("-3"), Value::Int(-3));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("64m"), Value::Str("64m".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("True"), Value::Bool(true));
        assert_eq!(resolve_plain("1.2.3"), Value::Str("1.2.3".into()));
    }

    #[test]
    fn numbers_keep_their_text() {
        let docs = parse("a: 1.10\nb: 0123\nc: 1e3\nd: 0x1F\n1.50: x\n").unwrap();
        for (key, text) in [("a", "1.10"), ("b", "0123"), ("c", "1e3"), ("d", "0x1F")] {
            assert_eq!(
                get(&docs[0], key).scalar_text().as_deref(),
                Some(text),
                "{key}"
            );
        }
        assert_eq!(get(&docs[0], "a").value, Value::Float(1.1));
        assert_eq!(get(&docs[0], "1.50").value, Value::Str("x".into()));
    }

    #[test]
    fn positions_and_quoting() {
        let docs = parse("containers:\n  web:\n    image: busybox\n    init: \"true\"\n").unwrap();
        let web = get(get(&docs[0], "containers"), "web");
        assert_eq!(get(web, "image").pos, Pos::new(3, 12));
        assert_eq!(get(web, "init").value, Value::Str("true".into()));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let text = "x-base: &base\n  init: true\n  restart: always\ncontainers:\n  a:\n    <<: *base\n    restart: \"no\"\n";
        let docs = parse(text).unwrap();
        let a = get(get(&docs[0], "containers"), "a");
        assert_eq!(get(a, "restart").value, Value::Str("no".into()));
        assert_eq!(get(a, "init").value, Value::Bool(true));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("too many"), "{err:?}");
    }

    #[test]
    fn multiple_documents() {
        assert_eq!(parse("a: 1\n---\nb: 2\n").unwrap().len(), 2);
        assert_eq!(parse("# only a comment\n").unwrap().len(), 0);
    }

    #[test]
    fn a_tab_in_indentation_is_reported_where_it_is() {
        let err = parse("a:\n  b: 1\n\tc: 2\n").unwrap_err();
        assert_eq!(err.pos, Pos::new(3, 1), "{err:?}");
        assert!(err.message.contains("tab"), "{err:?}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("containers:\n  web: [a, b\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
    }
}

//! JSON as sops writes it, read into the [`Node`] tree in document order
//! (the MAC covers the values in that order, so a sorted map will not do),
//! and trees written back out as JSON or YAML text.

use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::node::{Key, Node, Pos, Value};

/// Mappings and sequences nested deeper than this are refused, as the YAML
/// reader refuses them.
const MAX_DEPTH: usize = 64;

/// Parses JSON text into one node (positions are all 1:1: JSON is only read
/// here for files sops wrote, whose values are checked by their MAC).
pub(crate) fn parse(text: &str) -> Result<Node, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let node = Json::deserialize(&mut de)
        .map_err(|e| format!("not JSON: line {} column {}", e.line(), e.column()))?;
    de.end()
        .map_err(|e| format!("not JSON: line {} column {}", e.line(), e.column()))?;
    if depth(&node.0) > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(node.0)
}

fn depth(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(items) => items.iter().map(depth).max().unwrap_or(0),
        Value::Map(entries) => entries.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

struct Json(Node);

fn node(value: Value) -> Json {
    Json(Node::new(Pos::new(1, 1), value))
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(node(Value::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(node(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(node(Value::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => node(Value::Int(i)),
            Err(_) => node(Value::Float(v as f64)),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(node(Value::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(node(Value::Str(v.to_string().into())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(node(Value::Str(v.into())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Json(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(node(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some((k, Json(v))) = map.next_entry::<String, Json>()? {
            if entries.iter().any(|(e, _)| e.name == k) {
                return Err(serde::de::Error::custom("a key is repeated"));
            }
            let key = Key {
                name: k.into(),
                pos: Pos::new(1, 1),
            };
            entries.push((key, v));
        }
        Ok(node(Value::Map(entries)))
    }
}

/// A number as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it, which
/// is what sops hashes and encrypts: the shortest text that reads back the
/// same, never in exponent form.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{f}")
    }
}

fn scalar_json(n: &Node) -> String {
    match &n.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => n
            .raw
            .clone()
            .unwrap_or_else(|| go_float(*f).into())
            .to_string(),
        Value::Float(f) => serde_json::to_string(&go_float(*f)).unwrap_or_default(),
        Value::Str(s) | Value::DateTime(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Seq(_) | Value::Map(_) => String::new(),
    }
}

/// `node` as JSON, indented with tabs as sops writes it.
pub(crate) fn to_json(node: &Node) -> String {
    let mut out = String::new();
    json_into(node, 0, &mut out);
    out.push('\n');
    out
}

fn json_into(node: &Node, indent: usize, out: &mut String) {
    let pad = |n: usize| "\t".repeat(n);
    match &node.value {
        Value::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Value::Seq(items) if items.is_empty() => out.push_str("[]"),
        Value::Map(entries) => {
            out.push_str("{\n");
            for (i, (k, v)) in entries.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{}: ",
                    pad(indent + 1),
                    serde_json::to_string(&k.name).unwrap_or_default()
                );
                json_into(v, indent + 1, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(indent));
        }
        Value::Seq(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                json_into(v, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(indent));
        }
        _ => out.push_str(&scalar_json(node)),
    }
}

/// A string as a YAML scalar: plain when it cannot be read as anything
/// else, double-quoted (JSON escapes, which YAML reads) otherwise.
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./@+".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | ".inf" | ".nan"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// `docs` as YAML documents (block style, `---` between them).
pub(crate) fn to_yaml(docs: &[Node]) -> String {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match &doc.value {
            Value::Map(e) if !e.is_empty() => yaml_block(doc, 0, &mut out),
            Value::Seq(s) if !s.is_empty() => yaml_block(doc, 0, &mut out),
            _ => {
                out.push_str(&yaml_scalar(doc));
                out.push('\n');
            }
        }
    }
    out
}

fn yaml_scalar(n: &Node) -> String {
    match &n.value {
        Value::Str(s) | Value::DateTime(s) => yaml_str(s),
        Value::Map(_) => "{}".into(),
        Value::Seq(_) => "[]".into(),
        _ => scalar_json(n),
    }
}

fn is_block(n: &Node) -> bool {
    match &n.value {
        Value::Map(e) => !e.is_empty(),
        Value::Seq(s) => !s.is_empty(),
        _ => false,
    }
}

fn yaml_block(node: &Node, indent: usize, out: &mut String) {
    let pad = "    ".repeat(indent);
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let _ = write!(out, "{pad}{}:", yaml_str(&k.name));
                if is_block(v) {
                    out.push('\n');
                    yaml_block(v, indent + 1, out);
                } else {
                    let _ = writeln!(out, " {}", yaml_scalar(v));
                }
            }
        }
        Value::Seq(items) => {
            for v in items {
                if is_block(v) {
                    let _ = writeln!(out, "{pad}-");
                    yaml_block(v, indent + 1, out);
                } else {
                    let _ = writeln!(out, "{pad}- {}", yaml_scalar(v));
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", yaml_scalar(node));
        }
    }
}

//! TOML through `toml_edit`, which keeps the byte span of every key and value.

use toml_edit::{Document, Item, Table, Value as TValue};

use super::{SyntaxError, tidy};
use crate::node::{Key, LineIndex, Node, Pos, Value};

pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let lines = LineIndex::new(text);
    let doc = Document::parse(text).map_err(|e| SyntaxError {
        pos: lines.pos(e.span().map_or(0, |s| s.start)),
        message: tidy(e.message()),
    })?;
    Ok(table(&lines, doc.as_table(), Pos::new(1, 1)))
}

fn span_pos(lines: &LineIndex<'_>, span: Option<std::ops::Range<usize>>, fallback: Pos) -> Pos {
    span.map_or(fallback, |s| lines.pos(s.start))
}

fn table(lines: &LineIndex<'_>, t: &Table, at: Pos) -> Node {
    let entries = t
        .iter()
        .map(|(k, item)| {
            let key_pos = span_pos(lines, t.key(k).and_then(|k| k.span()), at);
            let key = Key { name: k.to_string(), pos: key_pos };
            (key, self::item(lines, item, key_pos))
        })
        .collect();
    Node::new(at, Value::Map(entries))
}

fn item(lines: &LineIndex<'_>, item: &Item, at: Pos) -> Node {
    match item {
        Item::None => Node::new(at, Value::Null),
        Item::Value(v) => value(lines, v, at),
        // A `[header]` table is reported at its key, which names the field.
        Item::Table(t) => table(lines, t, at),
        Item::ArrayOfTables(a) => {
            let items = a
                .iter()
                .map(|t| {
                    let pos = span_pos(lines, t.span(), at);
                    table(lines, t, pos)
                })
                .collect();
            Node::new(at, Value::Seq(items))
        }
    }
}

fn value(lines: &LineIndex<'_>, v: &TValue, fallback: Pos) -> Node {
    let pos = span_pos(lines, v.span(), fallback);
    let value = match v {
        TValue::String(s) => Value::Str(s.value().clone()),
        TValue::Integer(i) => Value::Int(*i.value()),
        TValue::Float(f) => Value::Float(*f.value()),
        TValue::Boolean(b) => Value::Bool(*b.value()),
        TValue::Datetime(d) => Value::DateTime(d.value().to_string()),
        TValue::Array(a) => Value::Seq(a.iter().map(|v| value(lines, v, pos)).collect()),
        TValue::InlineTable(t) => Value::Map(
            t.iter()
                .map(|(k, v)| {
                    let key_pos = span_pos(lines, t.key(k).and_then(|k| k.span()), pos);
                    (Key { name: k.to_string(), pos: key_pos }, value(lines, v, key_pos))
                })
                .collect(),
        ),
    };
    Node::new(pos, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &[(Key, Node)] {
        match &n.value {
            Value::Map(m) => m,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn positions_of_headers_keys_and_values() {
        let text = "[containers.web]\nimage = \"busybox\"\nports = [\"80:80\", \"81:81\"]\nenv = { A = 1 }\n";
        let root = parse(text).unwrap();
        let containers = &map(&root)[0];
        assert_eq!(containers.0.name, "containers");
        let web = &map(&containers.1)[0];
        assert_eq!(web.0.name, "web");
        assert_eq!(web.0.pos, Pos::new(1, 13));
        let fields = map(&web.1);
        assert_eq!(fields[0].0.pos, Pos::new(2, 1));
        assert_eq!(fields[0].1.pos, Pos::new(2, 9));
        assert_eq!(fields[0].1.value, Value::Str("busybox".into()));
        let Value::Seq(ports) = &fields[1].1.value else { panic!() };
        assert_eq!(ports[1].pos, Pos::new(3, 19));
        assert_eq!(map(&fields[2].1)[0].1.value, Value::Int(1));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("[containers.web]\nimage = \n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(!err.message.is_empty());
    }
}

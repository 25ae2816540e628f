//! TOML through the `toml` crate's spanned, borrowed document tree
//! (`DeTable`): it keeps the byte span of every key and value, and is about
//! twice as fast as `toml_edit`, which also keeps formatting we never need.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{SyntaxError, tidy};
use crate::node::{Key, LineIndex, Node, Pos, Text, Value};

pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let lines = LineIndex::new(text);
    match super::toml_plain::document(&lines) {
        Some(root) => Ok(root),
        None => parse_table(&lines),
    }
}

/// Through `DeTable`: every document, and every error.
pub(super) fn parse_table(lines: &LineIndex<'_>) -> Result<Node, SyntaxError> {
    let text = lines.text();
    let doc = DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        SyntaxError {
            pos: lines.pos(span.start),
            message: explain(text, span, e.message()),
        }
    })?;
    Ok(table(lines, doc.get_ref(), Pos::new(1, 1)))
}

/// The parser's message, made specific where it is vague: a repeated key is
/// named, and `key =` with nothing after it says so.
fn explain(text: &str, span: std::ops::Range<usize>, message: &str) -> String {
    if message == "duplicate key"
        && let Some(key) = text
            .get(span.clone())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    {
        return format!("duplicate key {key}: it is already defined in this table");
    }
    if let (Some(before), Some(after)) = (text.get(..span.start), text.get(span.start..)) {
        let line_before = before.rsplit('\n').next().unwrap_or("");
        let line_after = after.split('\n').next().unwrap_or("").trim();
        let rest_blank = line_after.is_empty() || line_after.starts_with('#');
        if let Some(key) = line_before
            .trim_end()
            .strip_suffix('=')
            .filter(|_| rest_blank)
        {
            return format!("missing value for key {}", key.trim());
        }
        // An array or inline table left open on an earlier line is the usual
        // cause of errors the parser only notices on a later one.
        if let Some((open, at)) = unclosed_bracket(before) {
            let lines = LineIndex::new(text);
            let (open_pos, error_pos) = (lines.pos(at), lines.pos(span.start));
            if open_pos.line < error_pos.line {
                let (what, close) = if open == '[' {
                    ("array", ']')
                } else {
                    ("inline table", '}')
                };
                return format!(
                    "{} (inside the {what} opened at {open_pos}: is its closing '{close}' missing?)",
                    tidy(message)
                );
            }
        }
    }
    tidy(message)
}

/// The innermost `[` or `{` of a value that is still open at the end of
/// `text`, and its byte offset; strings and comments are skipped, and table
/// headers close on their own line.
fn unclosed_bracket(text: &str) -> Option<(char, usize)> {
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '#' => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
            '"' | '\'' => {
                let triple = text[i..].starts_with(if c == '"' { "\"\"\"" } else { "\'\'\'" });
                if triple {
                    chars.next();
                    chars.next();
                }
                let mut quotes = 0;
                while let Some((_, d)) = chars.next() {
                    if d == '\\' && c == '"' {
                        chars.next();
                    } else if d == c {
                        quotes += 1;
                        if !triple || quotes == 3 {
                            break;
                        }
                        continue;
                    } else if d == '\n' && !triple {
                        break;
                    }
                    quotes = 0;
                }
            }
            '[' | '{' => open.push((c, i)),
            ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
}

fn table(lines: &LineIndex<'_>, t: &DeTable<'_>, at: Pos) -> Node {
    let entries = t
        .iter()
        .map(|(k, v)| {
            let key_pos = lines.pos(k.span().start);
            let key = Key {
                name: Text::from(k.get_ref().as_ref()),
                pos: key_pos,
            };
            (key, value(lines, v, key_pos))
        })
        .collect();
    Node::new(at, Value::Map(entries))
}

fn value(lines: &LineIndex<'_>, v: &Spanned<DeValue<'_>>, key_pos: Pos) -> Node {
    let span = v.span();
    let pos = if span.is_empty() {
        key_pos
    } else {
        lines.pos(span.start)
    };
    let value = match v.get_ref() {
        DeValue::String(s) => Value::Str(Text::from(s.as_ref())),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Str(Text::from(i.as_str())),
        },
        // `as_str` is already without `_` and in Rust's float syntax.
        DeValue::Float(f) => Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::DateTime(d.to_string().into()),
        DeValue::Array(a) => Value::Seq(
            a.iter()
                .map(|v| value(lines, v, lines.pos(v.span().start)))
                .collect(),
        ),
        // A `[header]` table is reported at its key, which names the field.
        DeValue::Table(t) => return Node::new(key_pos, table(lines, t, key_pos).value),
    };
    match (&value, lines.text().get(span)) {
        (Value::Int(_) | Value::Float(_), Some(raw)) => Node::new(pos, value).with_raw(raw),
        _ => Node::new(pos, value),
    }
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
        let Value::Seq(ports) = &fields[1].1.value else {
            panic!()
        };
        assert_eq!(ports[1].pos, Pos::new(3, 19));
        assert_eq!(map(&fields[2].1)[0].1.value, Value::Int(1));
    }

    #[test]
    fn numbers_keep_their_text() {
        let root = parse("a = 1.10\nb = 1_000\nc = 0x1F\nd = [2.50]\n").unwrap();
        let fields = map(&root);
        let texts: Vec<_> = fields
            .iter()
            .take(3)
            .map(|(_, v)| v.scalar_text().unwrap())
            .collect();
        assert_eq!(texts, ["1.10", "1_000", "0x1F"]);
        assert_eq!(fields[1].1.value, Value::Int(1000));
        assert_eq!(fields[2].1.value, Value::Int(31));
        let Value::Seq(items) = &fields[3].1.value else {
            panic!()
        };
        assert_eq!(items[0].scalar_text().as_deref(), Some("2.50"));
    }

    #[test]
    fn an_unclosed_array_is_pointed_at() {
        let err = parse("[a]\nx = [\"]\", '[' # [\n  1,\n  2\ny = 3\n").unwrap_err();
        assert!(
            err.message.contains("inside the array opened at 2:5"),
            "{err:?}"
        );
        assert_eq!(
            unclosed_bracket("a = \"\"\"[\"\"\" \n b = { c = [1, 2] "),
            Some(('{', 18))
        );
        assert_eq!(unclosed_bracket("[t]\na = [1]\n"), None);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("[containers.web]\nimage = \n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(!err.message.is_empty());
    }
}

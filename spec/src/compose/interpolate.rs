//! Compose's variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alternative}`,
//! `${VAR+alternative}` and `$$` for a literal `$`, as the Compose
//! Specification defines them. A default or alternative may itself hold
//! variables (`${A:-${B}}`). Any other `$` is an error, as in Compose: a
//! value is never half-substituted.

/// The substitution of one `${NAME<op>word}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `${NAME}` or `$NAME`
    Plain,
    /// `:-` (unset or empty) or `-` (unset): the word instead.
    Default { empty_too: bool },
    /// `:?` (unset or empty) or `?` (unset): an error with the word.
    Required { empty_too: bool },
    /// `:+` (set and not empty) or `+` (set): the word instead of the value.
    Alternative { empty_too: bool },
}

fn name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// How deep defaults may nest (`${A:-${B:-${C}}}` is 3): deeper is an
/// error, so a hostile value cannot exhaust the stack or cost quadratic time.
const MAX_NESTING: usize = 8;

fn invalid(s: &str) -> String {
    format!("invalid interpolation in \"{s}\" (write $$ for a literal $)")
}

/// `s` with its variables replaced by what `lookup` finds for them.
///
/// The error says what is wrong without the values of variables (they may
/// be secrets): the text as written, or the message of a `${VAR:?message}`.
pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    nested(s, lookup, 0)
}

fn nested(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "variables nest more than {MAX_NESTING} deep in a default"
        ));
    }
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(c) if name_start(c) => {
                let end = after.find(|c: char| !name_char(c)).unwrap_or(after.len());
                out.push_str(&lookup(&after[..end]).unwrap_or_default());
                rest = &after[end..];
            }
            Some('{') => {
                let inner = &after[1..];
                let close = matching_brace(inner).ok_or_else(|| invalid(s))?;
                out.push_str(&braced(&inner[..close], s, lookup, depth)?);
                rest = &inner[close + 1..];
            }
            _ => return Err(invalid(s)),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The byte offset of the `}` that closes a `${` whose content starts
/// `inner`, skipping `$$` and nested `${…}`.
fn matching_brace(inner: &str) -> Option<usize> {
    let bytes = inner.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// One `${…}` (its content, without the braces).
fn braced(
    content: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    let end = content
        .find(|c: char| !name_char(c))
        .unwrap_or(content.len());
    let name = &content[..end];
    if !name.starts_with(name_start) {
        return Err(invalid(whole));
    }
    let tail = &content[end..];
    let (op, word) = if tail.is_empty() {
        (Op::Plain, "")
    } else {
        let (empty_too, tail) = match tail.strip_prefix(':') {
            Some(t) => (true, t),
            None => (false, tail),
        };
        let mut cs = tail.chars();
        let op = match cs.next() {
            Some('-') => Op::Default { empty_too },
            Some('?') => Op::Required { empty_too },
            Some('+') => Op::Alternative { empty_too },
            _ => return Err(invalid(whole)),
        };
        (op, cs.as_str())
    };
    let value = lookup(name);
    let unset = |empty_too: bool| value.as_deref().is_none_or(|v| empty_too && v.is_empty());
    match op {
        Op::Plain => Ok(value.unwrap_or_default()),
        Op::Default { empty_too } if unset(empty_too) => nested(word, lookup, depth + 1),
        Op::Default { .. } => Ok(value.unwrap_or_default()),
        Op::Required { empty_too } if unset(empty_too) => Err(if word.is_empty() {
            format!("required variable {name} is missing a value")
        } else {
            format!("required variable {name} is missing a value: {word}")
        }),
        Op::Required { .. } => Ok(value.unwrap_or_default()),
        Op::Alternative { empty_too } if unset(empty_too) => Ok(String::new()),
        Op::Alternative { .. } => nested(word, lookup, depth + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${SET}".into()),
            _ => None,
        }
    }

    #[test]
    fn every_form_as_compose_defines_it() {
        // (input, expected output)
        let table: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("a${SET}b", "avalueb"),
            ("$SET-x", "value-x"),
            ("$SET_x", ""),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("${SET:-d}", "value"),
            ("${EMPTY:-d}", "d"),
            ("${UNSET:-d}", "d"),
            ("${SET-d}", "value"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${UNSET:-}", ""),
            ("${UNSET:-a b:c}", "a b:c"),
            ("${SET:?err}", "value"),
            ("${EMPTY?err}", ""),
            ("${SET?err}", "value"),
            ("${SET:+x}", "x"),
            ("${EMPTY:+x}", ""),
            ("${UNSET:+x}", ""),
            ("${SET+x}", "x"),
            ("${EMPTY+x}", "x"),
            ("${UNSET+x}", ""),
            ("$$", "$"),
            ("$$SET", "$SET"),
            ("$${SET}", "${SET}"),
            ("a $$ b", "a $ b"),
            ("${UNSET:-${SET}}", "value"),
            ("${UNSET:-$$}", "$"),
            ("${SET:+${EMPTY:-e}}", "e"),
            ("${SET}}", "value}"),
            ("${NESTED}", "${SET}"),
            ("é${SET}é", "évalueé"),
        ];
        for (input, want) in table {
            assert_eq!(interpolate(input, &env).as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn every_error_form() {
        // (input, what the error says)
        let table: &[(&str, &str)] = &[
            (
                "${UNSET:?must be set}",
                "required variable UNSET is missing a value: must be set",
            ),
            (
                "${EMPTY:?must be set}",
                "required variable EMPTY is missing a value: must be set",
            ),
            (
                "${UNSET?gone}",
                "required variable UNSET is missing a value: gone",
            ),
            ("${UNSET?}", "required variable UNSET is missing a value"),
            ("${UNSET:?}", "required variable UNSET is missing a value"),
            (
                "${UNSET:-${OTHER:?inner}}",
                "required variable OTHER is missing a value: inner",
            ),
            ("$", "invalid interpolation in \"$\""),
            ("cost $5", "invalid interpolation in \"cost $5\""),
            ("a $ b", "invalid interpolation"),
            ("${", "invalid interpolation"),
            ("${SET", "invalid interpolation"),
            ("${}", "invalid interpolation"),
            ("${1X}", "invalid interpolation"),
            ("${SET:x}", "invalid interpolation"),
            ("${SET*}", "invalid interpolation"),
            ("${SET:-${UNCLOSED}", "invalid interpolation"),
            ("${ SET}", "invalid interpolation"),
        ];
        for (input, want) in table {
            let err = interpolate(input, &env).expect_err(input);
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn hostile_nesting_is_refused_quickly() {
        let n = 200_000;
        let deep = format!("{}x{}", "${UNSET:-".repeat(n), "}".repeat(n));
        let started = std::time::Instant::now();
        let err = interpolate(&deep, &env).unwrap_err();
        assert!(err.contains("nest more than"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let ok = format!(
            "{}x{}",
            "${UNSET:-".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        assert_eq!(interpolate(&ok, &env).as_deref(), Ok("x"));
    }

    #[test]
    fn an_error_never_shows_a_value() {
        let secret = |_: &str| Some("hunter2".to_string());
        let err = interpolate("${PASSWORD} $", &secret).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}

//! Splitting an instruction's arguments into words, as Docker's parser does
//! for `ENV`, `LABEL` and `ARG` (moby `parser/line_parsers.go`): words end at
//! unquoted whitespace; quotes and escapes are kept in the word, for
//! [`crate::lex::expand`] to remove later.

/// Splits `rest` into words at unquoted whitespace, keeping quotes and
/// escape characters.
pub fn split(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    // A quoted empty string ("") is still a word.
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            } else if ch == escape && q != '\'' {
                // The escape character is kept with what it escapes; at
                // the very end it is dropped.
                if i == chars.len() {
                    quote = None;
                    continue;
                }
                word.push(ch);
                word.push(chars[i]);
                i += 1;
                continue;
            }
            word.push(ch);
            continue;
        }
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        if ch.is_whitespace() {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            blank_ok = false;
            in_word = false;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            blank_ok = true;
        }
        if ch == escape {
            if i == chars.len() {
                continue;
            }
            word.push(ch);
            word.push(chars[i]);
            i += 1;
            continue;
        }
        word.push(ch);
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Why `ENV`, `LABEL` or `ARG` arguments are malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    /// The legacy `ENV key value` form with no value.
    #[error("{instruction} must have two arguments")]
    TwoArguments {
        /// `ENV` or `LABEL`.
        instruction: &'static str,
    },
    /// A word without `=` after the first had one.
    #[error("syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    NoEquals {
        /// The word.
        word: String,
    },
    /// `=value` with no name.
    #[error("{instruction} names can not be blank")]
    BlankName {
        /// The instruction.
        instruction: &'static str,
    },
}

/// `ENV` and `LABEL`: `k=v k2=v2`, or the legacy `k the rest is the value`.
/// Keys and values still hold their quotes and escapes.
pub fn name_values(
    rest: &str,
    escape: char,
    instruction: &'static str,
) -> Result<Vec<(String, String)>, WordsError> {
    let words = split(rest, escape);
    let Some(first) = words.first() else {
        return Err(WordsError::TwoArguments { instruction });
    };
    if !first.contains('=') {
        let rest = rest.trim_start();
        let Some(at) = rest.find(char::is_whitespace) else {
            return Err(WordsError::TwoArguments { instruction });
        };
        let (key, value) = rest.split_at(at);
        return Ok(vec![(key.to_owned(), value.trim_start().to_owned())]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(WordsError::BlankName { instruction }),
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(WordsError::NoEquals { word }),
        })
        .collect()
}

/// `ARG`: `name` or `name=default`, one or more.
pub fn args(rest: &str, escape: char) -> Result<Vec<(String, Option<String>)>, WordsError> {
    split(rest, escape)
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(WordsError::BlankName { instruction: "ARG" }),
            Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
            None => Ok((word, None)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_unquoted_whitespace_keeping_quotes() {
        let table: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("  a\tb ", &["a", "b"]),
            ("k=\"a b\" k2='c d'", &["k=\"a b\"", "k2='c d'"]),
            ("a\\ b c", &["a\\ b", "c"]),
            ("k=\"x\\\"y\" z", &["k=\"x\\\"y\"", "z"]),
            ("k='x\\' y", &["k='x\\'", "y"]),
            ("\"\"", &["\"\""]),
            ("a\\", &["a"]),
            ("", &[]),
        ];
        for (input, want) in table {
            assert_eq!(&split(input, '\\'), want, "splitting {input:?}");
        }
    }

    #[test]
    fn name_values_in_both_forms() {
        assert_eq!(
            name_values("A=1 B=\"two words\"", '\\', "ENV").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into())
            ]
        );
        assert_eq!(
            name_values("KEY  the rest  is the value", '\\', "ENV").unwrap(),
            vec![("KEY".into(), "the rest  is the value".into())]
        );
        assert_eq!(
            name_values("KEY", '\\', "ENV").unwrap_err(),
            WordsError::TwoArguments { instruction: "ENV" }
        );
        assert_eq!(
            name_values("A=1 B", '\\', "LABEL").unwrap_err().to_string(),
            "syntax error - can't find = in \"B\". Must be of the form: name=value"
        );
        assert!(matches!(
            name_values("=1", '\\', "ENV"),
            Err(WordsError::BlankName { .. })
        ));
        assert_eq!(
            name_values("\"a key\"=v", '\\', "LABEL").unwrap(),
            vec![("\"a key\"".into(), "v".into())]
        );
    }

    #[test]
    fn args_with_and_without_defaults() {
        assert_eq!(
            args("A B=2 C=", '\\').unwrap(),
            vec![
                ("A".into(), None),
                ("B".into(), Some("2".into())),
                ("C".into(), Some(String::new()))
            ]
        );
        assert!(args("=x", '\\').is_err());
    }
}

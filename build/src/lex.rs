//! Variable substitution in one word, as Docker does it.
//!
//! This is the word processor of Docker's builders (moby `shell/lex.go`):
//! quotes are removed (`'…'` literal, `"…"` with `$` expanded), the escape
//! character (`\` or the one the `escape` directive chose) takes the next
//! character literally, and `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`,
//! `${VAR:+word}`, `${VAR+word}`, `${VAR:?message}` and `${VAR?message}` are
//! replaced. An unset variable expands to nothing. Whitespace is kept: the
//! result is one word.
//!
//! Start at [`expand`].

/// How deep `${…}` may nest in `${A:-${B:-…}}`: far beyond any real
/// Dockerfile, far below what the stack holds.
pub const MAX_DEPTH: usize = 64;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    /// `${` without its closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:…}` or `${{…`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator after the name that Docker does not know (`${A/x/y}`).
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The character after the name.
        modifier: char,
    },
    /// `${VAR?message}` with VAR unset, or `${VAR:?message}` with VAR unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message the word gave, or Docker's default.
        message: String,
    },
    /// `${…}` nested deeper than [`MAX_DEPTH`].
    #[error("substitutions nested deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A quote opened and never closed.
    #[error("unexpected end of statement while looking for matching {quote}")]
    UnterminatedQuote {
        /// `single-quote` or `double-quote`.
        quote: &'static str,
    },
}

/// Expands `word` with the variables `lookup` knows, with `escape` as the
/// escape character. Returns the word with quotes and escapes removed.
pub fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SubstError> {
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        lookup,
        depth: 0,
    };
    lexer.process(None)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// How many `${` we are inside.
    depth: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or the end of the word.
    fn process(&mut self, stop: Option<char>) -> Result<String, SubstError> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok(out);
            }
            match ch {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                '$' => out.push_str(&self.dollar()?),
                _ => {
                    self.next();
                    if ch == self.escape {
                        // The escape character takes the next one literally;
                        // at the end of the word it is dropped.
                        match self.next() {
                            Some(c) => out.push(c),
                            None => break,
                        }
                    } else {
                        out.push(ch);
                    }
                }
            }
        }
        match stop {
            // Only `${…}` stops early: its word ran off the end.
            Some(_) => Err(SubstError::MissingBrace),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, SubstError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(SubstError::UnterminatedQuote {
                        quote: "single-quote",
                    });
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, SubstError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(SubstError::UnterminatedQuote {
                        quote: "double-quote",
                    });
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(mut c) => {
                    self.next();
                    if c == self.escape {
                        match self.peek() {
                            // Only these can be escaped inside double quotes;
                            // any other escape character stays as written.
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                c = n;
                            }
                            None => continue,
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn dollar(&mut self) -> Result<String, SubstError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.get(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(SubstError::MissingBrace),
            Some('{' | '}' | ':') => return Err(SubstError::BadSubstitution),
            Some(_) => {}
        }
        if self.depth == MAX_DEPTH {
            return Err(SubstError::TooDeep { limit: MAX_DEPTH });
        }
        self.depth += 1;
        let result = self.braced();
        self.depth -= 1;
        result
    }

    /// `${name…}` after the `{`.
    fn braced(&mut self) -> Result<String, SubstError> {
        let name = self.name();
        let value = self.get(&name);
        match self.next() {
            None => Err(SubstError::MissingBrace),
            Some('}') => Ok(value.unwrap_or_default()),
            Some('?') => {
                let word = self.process(Some('}'))?;
                value.ok_or_else(|| SubstError::Required {
                    name,
                    message: or_default(word, "is not allowed to be unset"),
                })
            }
            Some('-') => {
                let word = self.process(Some('}'))?;
                Ok(value.unwrap_or(word))
            }
            Some('+') => {
                let word = self.process(Some('}'))?;
                Ok(if value.is_some() { word } else { String::new() })
            }
            Some(':') => {
                let modifier = self.next().ok_or(SubstError::MissingBrace)?;
                if !matches!(modifier, '-' | '+' | '?') {
                    return Err(SubstError::UnsupportedModifier { modifier });
                }
                let word = self.process(Some('}'))?;
                let value = value.filter(|v| !v.is_empty());
                match modifier {
                    '-' => Ok(value.unwrap_or(word)),
                    '+' => Ok(if value.is_some() { word } else { String::new() }),
                    _ => value.ok_or_else(|| SubstError::Required {
                        name,
                        message: or_default(word, "is not allowed to be empty"),
                    }),
                }
            }
            Some(modifier) => Err(SubstError::UnsupportedModifier { modifier }),
        }
    }

    /// A name: letters, digits and `_`; or a run of digits; or one special
    /// parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                name.push(ch);
                return name;
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

fn or_default(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_owned()
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("x y".into()),
            "1" => Some("one".into()),
            _ => None,
        }
    }

    fn x(word: &str) -> Result<String, SubstError> {
        expand(word, '\\', &env)
    }

    /// Cases from Docker's `envVarTest` table (moby `shell/envVarTest`) and
    /// the Dockerfile reference's "Environment replacement" section.
    #[test]
    fn expands_like_docker() {
        let table: &[(&str, &str)] = &[
            ("hello", "hello"),
            ("he'll'o", "hello"),
            ("he'llo", "<ERR>"),
            ("he\\'llo", "he'llo"),
            ("he\\\\'llo", "<ERR>"),
            ("abc\\\\def", "abc\\def"),
            ("\"abc\\\\def\"", "abc\\def"),
            ("'abc\\\\def'", "abc\\\\def"),
            ("\"hello\"", "hello"),
            ("\"he'llo\"", "he'llo"),
            ("\"he\\\"llo\"", "he\"llo"),
            ("\"he\\x\"", "he\\x"),
            ("'he\"llo'", "he\"llo"),
            ("'he\\\"llo'", "he\\\"llo"),
            ("a\\ b", "a b"),
            ("$A", "a"),
            ("${A}", "a"),
            ("$A$A", "aa"),
            ("${A}b", "ab"),
            ("$Ab", ""),
            ("\\$A", "$A"),
            ("'$A'", "$A"),
            ("\"$A\"", "a"),
            ("\"\\$A\"", "$A"),
            ("$", "$"),
            ("a$ b", "a$ b"),
            ("$1", "one"),
            ("$12", ""),
            ("$.", "$."),
            ("${UNSET}", ""),
            ("${UNSET:-x}", "x"),
            ("${UNSET-x}", "x"),
            ("${EMPTY:-x}", "x"),
            ("${EMPTY-x}", ""),
            ("${A:-x}", "a"),
            ("${UNSET:+x}", ""),
            ("${EMPTY:+x}", ""),
            ("${EMPTY+x}", "x"),
            ("${A:+x}", "x"),
            ("${A:+$A$A}", "aa"),
            ("${UNSET:-${A}b}", "ab"),
            ("${UNSET:-'}'}", "}"),
            ("${UNSET:-\"q $A\"}", "q a"),
            ("${A:?}", "a"),
            ("${SP}", "x y"),
            ("\\\\", "\\"),
            ("trailing\\", "trailing"),
            ("${", "<ERR>"),
            ("${}", "<ERR>"),
            ("${:x}", "<ERR>"),
            ("${A", "<ERR>"),
            ("${A:-x", "<ERR>"),
            ("${A/x/y}", "<ERR>"),
            ("${A:=x}", "<ERR>"),
            ("\"open", "<ERR>"),
        ];
        for (word, want) in table {
            let got = x(word).unwrap_or_else(|_| "<ERR>".into());
            assert_eq!(&got, want, "expanding {word:?}");
        }
    }

    #[test]
    fn required_variables_say_which_and_why() {
        assert_eq!(
            x("${UNSET?}").unwrap_err().to_string(),
            "UNSET: is not allowed to be unset"
        );
        assert_eq!(
            x("${EMPTY:?must be set}").unwrap_err().to_string(),
            "EMPTY: must be set"
        );
        assert_eq!(x("${EMPTY?}").unwrap(), "");
        assert_eq!(
            x("${EMPTY:?}").unwrap_err().to_string(),
            "EMPTY: is not allowed to be empty"
        );
    }

    #[test]
    fn the_escape_directive_changes_the_escape_character() {
        let bt = |w: &str| expand(w, '`', &env).unwrap();
        assert_eq!(bt("c:\\path\\$A"), "c:\\path\\a");
        assert_eq!(bt("`$A"), "$A");
        assert_eq!(bt("\"`\"\""), "\"");
        assert_eq!(bt("a` b"), "a b");
    }

    /// A Dockerfile from a repository nobody reviewed must not overflow the
    /// stack with `${A:-${A:-${A:-…}}}`.
    #[test]
    fn hostile_nesting_is_an_error_not_a_crash() {
        let deep = "${A:-".repeat(200_000) + &"}".repeat(200_000);
        assert_eq!(
            x(&deep).unwrap_err(),
            SubstError::TooDeep { limit: MAX_DEPTH }
        );
        let fine = "${U:-".repeat(MAX_DEPTH) + "x" + &"}".repeat(MAX_DEPTH);
        assert_eq!(x(&fine).unwrap(), "x");
    }

    #[test]
    fn errors_are_docker_s_messages() {
        assert_eq!(
            x("${").unwrap_err().to_string(),
            "syntax error: missing '}'"
        );
        assert_eq!(
            x("${}").unwrap_err().to_string(),
            "syntax error: bad substitution"
        );
        assert_eq!(
            x("${A#x}").unwrap_err().to_string(),
            "unsupported modifier (#) in substitution"
        );
        assert_eq!(
            x("'x").unwrap_err().to_string(),
            "unexpected end of statement while looking for matching single-quote"
        );
    }
}

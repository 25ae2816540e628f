//! Splitting a command written as one string into words, as Compose does
//! (POSIX shell quoting, no expansion).

/// Splits `s` into words: white space separates, `'…'` and `"…"` quote, and
/// `\` escapes the next character (inside double quotes only `\\`, `\"`, `\$` and `` \` ``).
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in \"{s}\"")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('\\' | '"' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in \"{s}\"")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in \"{s}\"")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing backslash in \"{s}\"")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        let table: [(&str, &[&str]); 6] = [
            ("httpd -f -p 80", &["httpd", "-f", "-p", "80"]),
            (
                "sh -c 'echo hello; sleep 1'",
                &["sh", "-c", "echo hello; sleep 1"],
            ),
            (r#"echo "a \"b\" c""#, &["echo", "a \"b\" c"]),
            (r"a\ b c", &["a b", "c"]),
            ("  ", &[]),
            ("x ''", &["x", ""]),
        ];
        for (s, want) in table {
            assert_eq!(split(s).unwrap(), want, "{s}");
        }
        assert!(split("echo 'oops").is_err());
        assert!(split("echo \"oops").is_err());
    }
}

//! `env_file`: `KEY=VALUE` lines, as Docker and Compose read them.

use std::path::Path;

/// Checks an environment variable name: not empty, no `=`, no white space, no NUL.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.contains(['=', '\0']) || key.chars().any(char::is_whitespace) {
        Err(format!(
            "\"{key}\" is not a valid environment variable name"
        ))
    } else {
        Ok(())
    }
}

/// Parses env-file text: blank lines and `#` comments are skipped, an
/// `export ` prefix is allowed, and a value wholly in single or double quotes
/// loses them. `shown` names the file in messages.
///
/// An error names the file and the line, and never quotes the line: env
/// files hold secrets, and a message goes to the terminal, the log and
/// `/status`.
pub fn parse(text: &str, shown: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{shown} line {}: not KEY=VALUE (the line is not shown, as it may hold a secret)",
                i + 1
            ));
        };
        vars.push(pair(key, value, shown, i + 1)?);
    }
    Ok(vars)
}

/// One variable of line `line`: the name checked, the value without its
/// trailing `\r` and enclosing quotes.
fn pair(key: &str, value: &str, shown: &str, line: usize) -> Result<(String, String), String> {
    let key = key.trim_end();
    if let Some(why) = bad_name(key) {
        return Err(format!("{shown} line {line}: the variable name {why}"));
    }
    let value = value.trim_end_matches('\r');
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value);
    Ok((key.to_string(), unquoted.to_string()))
}

/// The variables of env-file `text`, decrypted first when it is a SOPS
/// file (with `keys`; see [`crate::sops`]): a SOPS dotenv file's variables
/// go through the same rules as a plain file's lines (an `export ` prefix,
/// enclosing quotes), their values may hold new lines.
pub fn vars(
    text: &str,
    shown: &str,
    keys: Option<&crate::sops::AgeKeys>,
) -> Result<Vec<(String, String)>, String> {
    match crate::sops::env_file(text, keys) {
        None => parse(text, shown),
        Some(Err(why)) => Err(format!(
            "env_file \"{shown}\": cannot decrypt this SOPS file: {why}"
        )),
        Some(Ok(crate::sops::EnvPlain::Text(plain))) => parse(&plain, shown),
        Some(Ok(crate::sops::EnvPlain::Vars(vars))) => vars
            .into_iter()
            .map(|(line, key, value)| {
                let key = key.trim_start();
                let key = key.strip_prefix("export ").unwrap_or(key);
                pair(key, &value, shown, line)
            })
            .collect(),
    }
}

/// What is wrong with a variable name of an env file, without quoting it.
fn bad_name(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("is empty")
    } else if key.chars().any(char::is_whitespace) {
        Some("contains white space")
    } else if key.contains('\0') {
        Some("contains a NUL character")
    } else {
        None
    }
}

/// Reads the env file at `path` (its links already resolved), written
/// `shown` in the manifest and found at `looked_for`: its text, which
/// [`vars`] parses. Only a regular file of at most a manifest's default
/// size is read: a FIFO or a device in a source's tree is refused without
/// waiting on it (it could hold a load forever, or never end).
pub fn read(path: &Path, looked_for: &Path, shown: &str) -> Result<String, String> {
    use std::io::Read as _;
    let cannot = |why: String| {
        format!(
            "cannot read env_file \"{shown}\" ({}): {why}",
            looked_for.display()
        )
    };
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "env_file \"{shown}\" does not exist (looked for {})",
                looked_for.display()
            )
        } else {
            cannot(crate::diag::io_reason(&e))
        }
    };
    let f = crate::load::open_nonblocking(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    let max = crate::load::DEFAULT_MAX_FILE_SIZE;
    let mut bytes = Vec::with_capacity(meta.len().min(max) as usize);
    f.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(cannot(format!(
            "larger than {}",
            crate::units::format_size(max)
        )));
    }
    String::from_utf8(bytes).map_err(|_| cannot("stream did not contain valid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_files() {
        let text = "# comment\n\nA=1\nexport B = two\nC=\"quoted value\"\nD='x'\nE=\nF=a=b\n";
        let vars = parse(text, "app.env").unwrap();
        let want = [
            ("A", "1"),
            ("B", " two"),
            ("C", "quoted value"),
            ("D", "x"),
            ("E", ""),
            ("F", "a=b"),
        ];
        assert_eq!(vars.len(), want.len());
        for ((k, v), (wk, wv)) in vars.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_str()), (wk, wv));
        }
        let err = parse("A=1\nnot a pair\n", "app.env").unwrap_err();
        assert!(err.contains("app.env line 2"), "{err}");
    }

    #[test]
    fn errors_name_the_line_and_never_quote_it() {
        let secret = "hunter2-s3cr3t";
        for (text, line, why) in [
            (format!("A=1\n{secret}\n"), 2, "not KEY=VALUE"),
            (
                format!("\n\nexport {secret} x=1\n"),
                3,
                "contains white space",
            ),
            (format!("# c\n ={secret}\n"), 2, "is empty"),
            (format!("A\0{secret}=1\n"), 1, "NUL"),
        ] {
            let err = parse(&text, "app.env").unwrap_err();
            assert!(err.starts_with(&format!("app.env line {line}: ")), "{err}");
            assert!(err.contains(why), "{err}");
            assert!(!err.contains("s3cr3t"), "the line is quoted: {err}");
        }
    }
}
